"""Offline evaluation of recorded results: JSON Lines readers and the whole pipeline in one call.

Results: one object a line with `agent`, `check`, `ts` (RFC 3339 with an offset; the scheduled
time), `ok` (bool), optional `latency_ms`, `error`, `degraded` (bool: ok but slower than the check's
degraded_after; never with ok false). Maintenance: `kind`, `start`, `end`, `announced`
and/or `recorded_at`, optional `note`, `cancelled_at`, `cancel_reason`, or recurring maintenance with
`rrule` and `duration` instead of `end` (see read_maintenance). Bad
input raises InputError naming the file, line and field. Reading stays on
json.loads and datetime.fromisoformat (no per-line validation library) so a month of 60-second
results from six agents (about 270,000 lines) reads in well under a second or two.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Sequence

from .maintenance import STATED_CLOCK_SKEW, check_kinds
from .model import Announcement, Observation, iso, paused_gc
from .periods import month_bounds
from .policy import Policy
from .recurrence import CancelledOccurrence, MaintenanceSeries, RecurrenceError, expand_maintenance, judged_range, parse_recurrence
from .report import build_report, verify_claim
from .rounds import ObservationIndex
from .windows import find_windows, is_down

__all__ = ["InputError", "read_results", "read_maintenance", "check_components", "evaluate_offline",
           "verify_claim_offline", "evaluate_windows"]

UTC = timezone.utc
_CHUNK_ROUNDS = 1440  # how far to look past a boundary at a time while a run continues


class InputError(ValueError):
    """Bad input, with where it is: `results.jsonl:17: field 'ts': ...`."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)


def _lines(path_or_lines) -> tuple[str, Iterable[str]]:
    """(name for messages, lines) from a path or an iterable of lines."""
    if isinstance(path_or_lines, (str, Path)):
        path = Path(path_or_lines)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
        return path.name, text.splitlines()
    name = getattr(path_or_lines, "name", None)
    return (Path(name).name if isinstance(name, str) else "<input>"), path_or_lines


def _timestamp(text, cache: dict, file: str, line: int, field: str) -> datetime:
    moment = cache.get(text)
    if moment is not None:
        return moment
    if not isinstance(text, str):
        raise InputError(f"expected an RFC 3339 timestamp, got {json.dumps(text)}", file=file, line=line, field=field)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"timestamp {text!r} is not RFC 3339", file=file, line=line, field=field) from None
    if moment.tzinfo is None:
        raise InputError(f"timestamp {text!r} has no UTC offset", file=file, line=line, field=field)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InputError(f"timestamp {text!r} is out of range", file=file, line=line, field=field) from None
    if len(cache) < 1_000_000:
        cache[text] = moment
    return moment


def _object(raw: str, file: str, number: int) -> dict:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc.msg} at column {exc.colno})", file=file, line=number) from None
    if not isinstance(obj, dict):
        raise InputError("not a JSON object", file=file, line=number)
    return obj


def _batches(lines: Iterable[str], file: str, size: int = 5000):
    """Lists of (line number, object) for the non-blank lines, `size` lines at a time.

    A batch is decoded as one JSON array (a third of the cost of one json.loads per line) and
    trusted when the array holds exactly one object per line; otherwise (a blank line, a line that
    is not JSON, two objects on one line) it is decoded line by line, which names the bad line.
    """
    if not isinstance(lines, list):
        lines = list(lines)
    for first in range(0, len(lines), size):
        texts = lines[first:first + size]
        try:
            objects = json.loads("[" + ",".join(texts) + "]")
        except (json.JSONDecodeError, RecursionError):
            objects = None
        if objects is not None and len(objects) == len(texts) and all(type(o) is dict for o in objects):
            yield list(zip(range(first + 1, first + 1 + len(texts)), objects))
        else:
            yield [(n, _object(t, file, n)) for n, t in enumerate(texts, first + 1) if t.strip()]


def _parsed(lines: Iterable[str], file: str):
    for batch in _batches(lines, file):
        yield from batch


def _bad_result(obj: dict, number: int, file: str, accepted: set | None, components) -> InputError | None:
    """The first thing wrong with one result object, as an InputError (None when it is fine)."""
    for field in ("agent", "check", "ok"):
        if field not in obj:
            return InputError("missing", file=file, line=number, field=field)
    if "ts" not in obj and "slot" not in obj:
        return InputError("missing", file=file, line=number, field="ts")
    agent, check, ok = obj["agent"], obj["check"], obj["ok"]
    if type(agent) is not str or not agent:
        return InputError(f"expected an agent name, got {json.dumps(agent)}", file=file, line=number, field="agent")
    if type(check) is not str or not check:
        return InputError(f"expected a check name, got {json.dumps(check)}", file=file, line=number, field="check")
    if ok is not True and ok is not False:
        return InputError(f"expected true or false, got {json.dumps(ok)}", file=file, line=number, field="ok")
    if accepted is not None and check not in accepted:
        return InputError(f"unknown check {check!r}; the policy's components are {', '.join(components)}",
                          file=file, line=number, field="check")
    latency = obj.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
        return InputError(f"expected a number or null, got {json.dumps(latency)}", file=file, line=number,
                          field="latency_ms")
    error = obj.get("error")
    if error is not None and type(error) is not str:
        return InputError(f"expected a string or null, got {json.dumps(error)}", file=file, line=number, field="error")
    degraded = obj.get("degraded")
    if degraded is not None and degraded is not True and degraded is not False:
        return InputError(f"expected true, false or null, got {json.dumps(degraded)}", file=file, line=number,
                          field="degraded")
    if degraded and not ok:
        return InputError("a failed result is not degraded (degraded means ok but slow)", file=file, line=number,
                          field="degraded")
    return None


def read_results(path_or_lines, *, components: Sequence[str] | None = None) -> list[Observation]:
    """Observations from a JSON Lines file (a path) or an iterable of lines.

    With `components`, a check that is not one of them is an error at its line.
    """
    file, lines = _lines(path_or_lines)
    cache: dict[str, datetime] = {}
    accepted = set(components) if components is not None else None
    out: list[Observation] = []
    append = out.append
    with paused_gc():
        for batch in _batches(lines, file):
            for number, obj in batch:
                # fast path: the usual, well-formed line; anything else is examined by _bad_result
                try:
                    agent, check, ok, ts_text = obj["agent"], obj["check"], obj["ok"], obj["ts"]
                    ts = cache[ts_text]
                except (KeyError, TypeError):
                    problem = _bad_result(obj, number, file, accepted, components)
                    if problem is not None:
                        raise problem from None
                    agent, check, ok = obj["agent"], obj["check"], obj["ok"]
                    ts = _timestamp(obj["ts"] if "ts" in obj else obj["slot"], cache, file, number, "ts")
                    append(Observation(agent, check, ts, ok, obj.get("degraded") is True))
                    continue
                latency, error, degraded = obj.get("latency_ms"), obj.get("error"), obj.get("degraded")
                if (ok is not True and ok is not False) or type(agent) is not str or type(check) is not str \
                        or not agent or not check or (accepted is not None and check not in accepted) \
                        or (latency is not None and type(latency) is not float and type(latency) is not int) \
                        or (error is not None and type(error) is not str) \
                        or (degraded is not None and degraded is not False and (degraded is not True or not ok)):
                    raise _bad_result(obj, number, file, accepted, components)
                append(Observation(agent, check, ts, ok, degraded is True))
    return out


def read_maintenance(path_or_lines, *, kinds: Sequence[str] | None = None) -> list[Announcement]:
    """Announcements from JSON Lines: kind, start, end (RFC 3339 with offsets), optional note, and
    when each was announced:

      recorded_at   when a collector recorded it (as GET /api/v1/maintenance lists it); notice is
                    judged from it, and `announced` (or `stated_announced`) is the stated time.
      announced     without recorded_at, the file is the operator's own record: its `announced`
                    is taken as when it was recorded (the text report says so).
      cancelled_at  (optional, with `cancel_reason`) a cancelled announcement excludes nothing.

    A line with `rrule` and `duration` (and `start`, no `end`) is recurring maintenance: a
    MaintenanceSeries, expanded for the period a report or claim asks (_read_series).

    With `kinds` (the policy's maintenance kinds), another kind is an error at its line.
    """
    file, lines = _lines(path_or_lines)
    cache: dict[str, datetime] = {}
    out: list[Announcement | MaintenanceSeries] = []
    for number, obj in _parsed(lines, file):
        if "rrule" in obj or "duration" in obj:
            out.append(_read_series(obj, number, file, cache, kinds))
            continue
        for field in ("kind", "start", "end"):
            if field not in obj:
                raise InputError("missing", file=file, line=number, field=field)
        stated_field = "announced" if obj.get("announced") is not None else "stated_announced"
        if obj.get(stated_field) is None and obj.get("recorded_at") is None:
            raise InputError("missing (give when it was announced, or recorded_at)", file=file, line=number,
                             field="announced")
        kind, note = obj["kind"], obj.get("note") or ""
        if not isinstance(kind, str) or not kind:
            raise InputError(f"expected a maintenance kind, got {json.dumps(kind)}", file=file, line=number,
                             field="kind")
        if kinds is not None and kind not in kinds:
            raise InputError(f"maintenance kind {kind!r} is not accepted (accepted kinds: "
                             f"{', '.join(kinds) or 'none'})", file=file, line=number, field="kind")
        reason = obj.get("cancel_reason") or ""
        for field, value in (("note", note), ("cancel_reason", reason)):
            if not isinstance(value, str):
                raise InputError(f"expected a string, got {json.dumps(value)}", file=file, line=number, field=field)
        start, end = (_timestamp(obj[f], cache, file, number, f) for f in ("start", "end"))
        stated, recorded_at, cancelled_at = (
            _timestamp(obj[f], cache, file, number, f) if obj.get(f) is not None else None
            for f in (stated_field, "recorded_at", "cancelled_at"))
        if end < start:
            raise InputError(f"end {obj['end']} is before start {obj['start']}", file=file, line=number, field="end")
        if stated is not None and recorded_at is not None and stated > recorded_at + STATED_CLOCK_SKEW:
            raise InputError(f"{obj[stated_field]} is later than recorded_at {obj['recorded_at']}: a stated "
                             "announcement time is when notice was given before it was recorded",
                             file=file, line=number, field=stated_field)
        recorded = recorded_at if recorded_at is not None else stated
        if cancelled_at is not None and cancelled_at < recorded:
            raise InputError(f"{obj['cancelled_at']} is before it was recorded ({iso(recorded)})",
                             file=file, line=number, field="cancelled_at")
        out.append(Announcement(kind, stated, start, end, note, recorded_at=recorded_at, recorded_by="file",
                                cancelled_at=cancelled_at, cancel_reason=reason))
    return out


# What GET /api/v1/maintenance lists for a series (so a listing reads back as a file); the
# listing's derived fields (next_occurrences, duration_seconds, cancelled) are not read.
_SERIES_FIELDS = {"kind", "start", "rrule", "duration", "timezone", "note", "announced", "stated_announced",
                  "recorded_at", "recorded_by", "author", "id", "policy", "cancelled_at", "cancel_reason",
                  "cancelled_by", "cancelled_occurrences", "next_occurrences", "cancelled", "duration_seconds"}


def _read_series(obj: dict, number: int, file: str, cache: dict, kinds: Sequence[str] | None) -> MaintenanceSeries:
    """A recurring maintenance line: kind, start (DTSTART), rrule, duration, optional timezone
    (UTC by default), when it was announced (as a one-off's), optional cancelled_at and
    cancelled_occurrences [{start, cancelled_at, cancel_reason}] (as GET /api/v1/maintenance
    lists a series). Validated as the API validates a series (collector.rules.recurrence)."""
    for field in ("kind", "start", "rrule", "duration"):
        if field not in obj:
            raise InputError("missing (a recurring maintenance line has kind, start, rrule and duration)",
                             file=file, line=number, field=field)
    if "end" in obj:
        raise InputError("a recurring maintenance line has a duration, not an end", file=file, line=number, field="end")
    unknown = sorted(set(obj) - _SERIES_FIELDS)
    if unknown:
        raise InputError("unknown field", file=file, line=number, field=unknown[0])
    kind, note, reason = obj["kind"], obj.get("note") or "", obj.get("cancel_reason") or ""
    if not isinstance(kind, str) or not kind:
        raise InputError(f"expected a maintenance kind, got {json.dumps(kind)}", file=file, line=number, field="kind")
    if kinds is not None and kind not in kinds:
        raise InputError(f"maintenance kind {kind!r} is not accepted (accepted kinds: {', '.join(kinds) or 'none'})",
                         file=file, line=number, field="kind")
    for field, value in (("note", note), ("cancel_reason", reason)):
        if not isinstance(value, str):
            raise InputError(f"expected a string, got {json.dumps(value)}", file=file, line=number, field=field)
    stated_field = "announced" if obj.get("announced") is not None else "stated_announced"
    if obj.get(stated_field) is None and obj.get("recorded_at") is None:
        raise InputError("missing (give when it was announced, or recorded_at)", file=file, line=number,
                         field="announced")
    start = _timestamp(obj["start"], cache, file, number, "start")
    stated, recorded_at, cancelled_at = (
        _timestamp(obj[f], cache, file, number, f) if obj.get(f) is not None else None
        for f in (stated_field, "recorded_at", "cancelled_at"))
    if stated is not None and recorded_at is not None and stated > recorded_at + STATED_CLOCK_SKEW:
        raise InputError(f"{obj[stated_field]} is later than recorded_at {obj['recorded_at']}: a stated "
                         "announcement time is when notice was given before it was recorded",
                         file=file, line=number, field=stated_field)
    try:
        recurrence = parse_recurrence(obj["rrule"], start, obj["duration"], obj.get("timezone") or "UTC")
    except RecurrenceError as err:
        raise InputError(err.reason, file=file, line=number, field=err.field) from None
    recorded = recorded_at if recorded_at is not None else stated
    if cancelled_at is not None and cancelled_at < recorded:
        raise InputError(f"{obj['cancelled_at']} is before it was recorded ({iso(recorded)})",
                         file=file, line=number, field="cancelled_at")
    cancelled = obj.get("cancelled_occurrences") or []
    if not isinstance(cancelled, list):
        raise InputError("expected a list of {start, cancelled_at, cancel_reason}", file=file, line=number,
                         field="cancelled_occurrences")
    occurrences = []
    for i, c in enumerate(cancelled):
        where = f"cancelled_occurrences[{i}]"
        if not isinstance(c, dict) or "start" not in c or "cancelled_at" not in c:
            raise InputError("expected {start, cancelled_at, cancel_reason}", file=file, line=number, field=where)
        c_start = _timestamp(c["start"], cache, file, number, f"{where}.start")
        c_at = _timestamp(c["cancelled_at"], cache, file, number, f"{where}.cancelled_at")
        if not recurrence.is_occurrence(c_start):
            raise InputError(f"{c['start']} is not an occurrence of {recurrence.rrule} from {iso(start)}",
                             file=file, line=number, field=f"{where}.start")
        c_reason = c.get("cancel_reason") or ""
        if not isinstance(c_reason, str):
            raise InputError(f"expected a string, got {json.dumps(c_reason)}", file=file, line=number,
                             field=f"{where}.cancel_reason")
        occurrences.append(CancelledOccurrence(c_start, c_at, c_reason))
    series_id = obj.get("id")
    return MaintenanceSeries(kind, recurrence, recorded_at, stated, note, recorded_by="file",
                             cancelled_at=cancelled_at, cancel_reason=reason,
                             id=series_id if type(series_id) is int else None,
                             cancelled_occurrences=tuple(occurrences))


def check_components(policy: Policy, observations: Iterable[Observation]) -> None:
    """InputError for the first check that is not one of the policy's components."""
    accepted = set(policy.components)
    for obs in observations:
        if obs.check not in accepted:
            raise InputError(f"unknown check {obs.check!r}; policy '{policy.name}' accepts "
                             f"{', '.join(policy.components)}", field="check")


def evaluate_windows(policy: Policy, index: ObservationIndex, start: datetime, end: datetime, *,
                     now: datetime | None = None):
    """Rounds over [start, end) widened so that a run crossing either edge is judged whole, and the
    windows in them.

    1. Rounds for [start, min(end, now)), without the unfinished slot that contains `now`.
    2. While the first round is down (FAILED, or DEGRADED where that counts: is_down) and there is
       earlier data, prepend a day of rounds.
    3. When the range runs to `end`: while the last round is down and there is later data (and,
       with `now`, the slot has begun), append a day of rounds.
    4. With `now`, a run that reaches the last round is still open.
    """
    iu = index.interval_us
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    to_us = lambda t: (t - epoch) // timedelta(microseconds=1)
    horizon = end if now is None else min(end, max(now, start))
    lo, hi = to_us(start), to_us(horizon)
    if horizon < end:
        hi -= hi % iu   # the slot that contains `now` has not finished: its reports may be on the way
    rounds = index.rounds_us(lo, hi, sparse=True) if hi > lo else []
    if not rounds:
        return rounds, []
    first_data, last_data = index.first_slot_us, index.last_slot_us
    now_us = None if now is None else to_us(now)
    while first_data is not None and is_down(policy, rounds[0].verdict):
        head = to_us(rounds[0].slot)
        if head <= first_data:
            break
        rounds = index.rounds_us(max(first_data, head - _CHUNK_ROUNDS * iu), head, sparse=True) + rounds
    if horizon == end:
        while last_data is not None and is_down(policy, rounds[-1].verdict):
            tail = to_us(rounds[-1].slot) + iu
            # without `now` the data's end is the end; with it, silent agents after the data
            # give UNKNOWN rounds up to `now`, which end the run
            limit = last_data + iu if now_us is None else now_us - now_us % iu
            if tail >= limit:
                break
            rounds = rounds + index.rounds_us(tail, min(limit, tail + _CHUNK_ROUNDS * iu), sparse=True)
    return rounds, find_windows(policy, rounds, open_tail=now is not None)


def evaluate_offline(policy: Policy, observations: Iterable[Observation], period: str,
                     maintenance: Sequence[Announcement] = (), now: datetime | None = None, history=None,
                     *, fee: float | None = None, expected_by_component: dict[str, list[str]] | None = None,
                     include_evidence: bool = False) -> dict:
    """The period's report from recorded observations (rounds, windows, report in one call)."""
    policy.require_target()
    check_kinds(policy, maintenance)
    index = ObservationIndex(policy, observations, expected_by_component=expected_by_component)
    start, end = month_bounds(period, policy.tz)
    maintenance = expand_maintenance(maintenance, start, end)   # a series: its occurrences in the month
    rounds, windows = evaluate_windows(policy, index, start, end, now=now)
    return build_report(policy, period, rounds, windows, maintenance, now=now, history=history, fee=fee,
                        include_evidence=include_evidence)


def verify_claim_offline(policy: Policy, observations: Iterable[Observation], start: datetime, end: datetime,
                         maintenance: Sequence[Announcement] = (), now: datetime | None = None, *,
                         expected_by_component: dict[str, list[str]] | None = None) -> dict:
    """verify_claim on recorded observations: windows over the claim, widened to judge runs whole."""
    check_kinds(policy, maintenance)
    # a series: its occurrences in the claim's whole local months (monthly budgets)
    maintenance = expand_maintenance(maintenance, *judged_range(policy.tz, start, end))
    index = ObservationIndex(policy, observations, expected_by_component=expected_by_component)
    rounds, windows = evaluate_windows(policy, index, start, end, now=now)
    return verify_claim(policy, start, end, windows, maintenance, now=now, rounds=rounds)
