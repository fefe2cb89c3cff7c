"""Recurring maintenance as evidence: the canonical log entries of a series and of an occurrence's
cancellation (docs/evidence.md, "The log"), and the rules core's series made from them.

The collector appends `{"record": {...}, "type": "maintenance_series"}` with every column of the
series when it is recorded and again, whole, when it is cancelled (collector.store
.log_maintenance_series), and `{"record": {...}, "type": "maintenance_occurrence_cancelled"}`
when one occurrence is (collector.store.cancel_occurrence). The records here are those objects
rebuilt field by field, so a bundle's copy hashes to the logged bytes only if nothing in it was
changed; the series is then expanded by the same pure collector.rules.recurrence the collector
reports with.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping, Sequence

from .canonical import CanonicalError, _time_field, canonical_json

__all__ = ["SERIES_FIELDS", "CANCELLATION_FIELDS", "SERIES_CANCEL_FIELDS", "series_record", "series_entry",
           "cancellation_record", "cancellation_entry", "rules_series"]

# Every column of collector.db.MaintenanceSeries, as collector.store logs them.
SERIES_FIELDS = ("author", "cancel_reason", "cancelled_at", "cancelled_by", "duration_seconds", "id", "kind", "note",
                 "policy", "recorded_at", "recorded_by", "rrule", "start", "stated_announced", "timezone")
# What a later version of a series may change: it is only ever cancelled, never edited.
SERIES_CANCEL_FIELDS = ("cancelled_at", "cancelled_by", "cancel_reason")
CANCELLATION_FIELDS = ("cancel_reason", "cancelled_at", "cancelled_by", "series_id", "start")

_TIMES = ("start", "recorded_at")
_OPTIONAL_TIMES = ("stated_announced", "cancelled_at")
_INTS = ("id", "duration_seconds")
_REQUIRED = ("policy", "kind", "recorded_by", "rrule", "timezone")


def _fields(fields: Mapping[str, Any], names: Sequence[str], what: str) -> None:
    if not isinstance(fields, Mapping):
        raise CanonicalError(f"{what}: expected an object")
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise CanonicalError(f"field '{unknown[0]}': not a field of {what}")


def series_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical object of a series as logged: every field of SERIES_FIELDS, timestamps
    canonical, null where none."""
    _fields(fields, SERIES_FIELDS, "a maintenance series")
    out: dict[str, Any] = {}
    for name in SERIES_FIELDS:
        value = fields.get(name)
        if name in _TIMES:
            value = _time_field(value, name)
        elif name in _OPTIONAL_TIMES:
            value = None if value is None else _time_field(value, name)
        elif name in _INTS:
            if type(value) is not int:
                raise CanonicalError(f"field '{name}': expected an integer")
        elif value is not None and not isinstance(value, str):
            raise CanonicalError(f"field '{name}': expected a string or null")
        out[name] = value
    for name in _REQUIRED:
        if not out[name]:
            raise CanonicalError(f"field '{name}': missing")
    return out


def series_entry(record: Mapping[str, Any]) -> bytes:
    return canonical_json({"record": series_record(record), "type": "maintenance_series"})


def cancellation_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical object of one occurrence's cancellation as logged."""
    _fields(fields, CANCELLATION_FIELDS, "an occurrence's cancellation")
    out = {"cancel_reason": fields.get("cancel_reason"),
           "cancelled_at": _time_field(fields.get("cancelled_at"), "cancelled_at"),
           "cancelled_by": fields.get("cancelled_by"),
           "series_id": fields.get("series_id"),
           "start": _time_field(fields.get("start"), "start")}
    if out["cancel_reason"] is not None and not isinstance(out["cancel_reason"], str):
        raise CanonicalError("field 'cancel_reason': expected a string or null")
    if not isinstance(out["cancelled_by"], str) or not out["cancelled_by"]:
        raise CanonicalError("field 'cancelled_by': expected a string")
    if type(out["series_id"]) is not int:
        raise CanonicalError("field 'series_id': expected the series' integer id")
    return out


def cancellation_entry(record: Mapping[str, Any]) -> bytes:
    return canonical_json({"record": cancellation_record(record), "type": "maintenance_occurrence_cancelled"})


def rules_series(record: Mapping[str, Any], cancellations: Sequence[Mapping[str, Any]] = (), *, validate: bool = True):
    """collector.rules.recurrence.MaintenanceSeries of a series' latest canonical record and its
    canonical cancellations, as collector.reporting.series_of makes it from the database's rows.
    With `validate`, the rule is checked as the collector checks it when it records one
    (RecurrenceError naming the field), which also bounds what expanding it can cost."""
    from collector.rules.recurrence import CancelledOccurrence, MaintenanceSeries, Recurrence, parse_recurrence
    from protocol.timestamps import parse_rfc3339

    def ts(value):
        return None if value is None else parse_rfc3339(value)
    start, duration = ts(record["start"]), timedelta(seconds=record["duration_seconds"])
    if validate:
        parse_recurrence(record["rrule"], start, duration, record["timezone"])
    return MaintenanceSeries(
        kind=record["kind"], recurrence=Recurrence(record["rrule"], start, duration, record["timezone"]),
        recorded_at=ts(record["recorded_at"]), announced=ts(record["stated_announced"]), note=record["note"] or "",
        recorded_by=record["recorded_by"], author=record["author"] or "", cancelled_at=ts(record["cancelled_at"]),
        cancel_reason=record["cancel_reason"] or "", id=record["id"],
        cancelled_occurrences=tuple(CancelledOccurrence(ts(c["start"]), ts(c["cancelled_at"]), c["cancel_reason"] or "",
                                                        c["cancelled_by"]) for c in cancellations))
