"""Maintenance announcements: recorded by the admin, listed for everyone, judged in every report.

An announcement is evidence a report relies on: the collector stamps when it recorded it
(`recorded_at`, its own clock) and judges notice from that; a time the operator states
(`announced`, e.g. an email sent earlier) is kept beside it as `stated_announced`. Announcements
are append-only: DELETE marks one cancelled and it stays listed. The same validation serves the
API and `uptime-collector maintenance announce`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from aiohttp import web
from protocol.timestamps import parse_rfc3339
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector import store
from collector.db import Maintenance
from collector.errors import RequestError, describe
from collector.reporting import announcement_of, load_maintenance, series_of
from collector.rules.maintenance import STATED_CLOCK_SKEW, judge_maintenance
from collector.rules.durations import format_duration
from collector.rules.model import iso
from collector.rules.recurrence import Recurrence, RecurrenceError, judged_range, parse_recurrence
from collector.rules.policy import Policy, PolicyError

from .common import STATE, json_response, policy_named, read_json, require_admin, require_read

# Announcement ids are database integers: anything else names no announcement.
_MAX_ID = 2**31 - 1


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("announced", "start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        try:
            return v.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    policy: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=32)
    # The time the operator states notice was given (before the collector recorded it); optional.
    announced: AwareDatetime | None = None
    start: AwareDatetime
    end: AwareDatetime
    note: str = Field(default="", max_length=2000)
    author: str = Field(default="", max_length=128)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


def validate_announcement(data: Any, policies: Mapping[str, Policy], now: datetime) -> MaintenanceIn:
    """An announcement as the API and the CLI accept it; RequestError naming the field otherwise
    (404 for an unknown policy, 422 for the rest).

    1. Fields and types (unknown fields refused). 2. The policy is in force and accepts the kind.
    3. end after start. 4. A stated `announced` is not later than now (by the collector's clock,
       with STATED_CLOCK_SKEW for the caller's): it is when notice was given, before recording."""
    try:
        m = MaintenanceIn.model_validate(data)
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    policy = policies.get(m.policy)
    if policy is None:
        raise RequestError(f"policy: unknown policy {m.policy!r} (configured: {', '.join(sorted(policies))})", 404)
    if m.kind not in policy.maintenance:
        accepted = ", ".join(sorted(policy.maintenance)) or "none"
        raise RequestError(f"kind: policy {m.policy!r} accepts no maintenance of kind {m.kind!r} (accepted: {accepted})", 422)
    if m.end <= m.start:
        raise RequestError("end: must be after start", 422)
    if m.announced is not None and m.announced > now + STATED_CLOCK_SKEW:
        raise RequestError(f"announced: {iso(m.announced)} is later than now ({iso(now)} by the collector's clock); "
                           "it is the time notice was given before the announcement is recorded: leave it out "
                           "when notice is given now", 422)
    return m


def record_of(row: Maintenance) -> dict[str, Any]:
    """A stored announcement as the API and `maintenance list --format json` show it."""
    return {"id": row.id, "policy": row.policy, "kind": row.kind, "start": iso(row.start), "end": iso(row.end),
            "note": row.note or "", "recorded_at": iso(row.recorded_at), "recorded_by": row.recorded_by,
            "author": row.author or "", "stated_announced": iso(row.stated_announced),
            "cancelled": row.cancelled_at is not None, "cancelled_at": iso(row.cancelled_at),
            "cancelled_by": row.cancelled_by, "cancel_reason": row.cancel_reason}


def judgement_of(policy: Policy, rows: Sequence[Maintenance], row_id: int) -> dict[str, Any] | None:
    """How the policy's rules judge one announcement among the policy's others (the budget is
    shared): compliant, broken_rules, notice. None when the rules refuse to judge."""
    announcements = [announcement_of(r) for r in rows if r.kind in policy.maintenance]
    try:
        judgements = judge_maintenance(policy, announcements)
    except (PolicyError, ValueError):
        return None
    for ann, judgement in zip(announcements, judgements):
        if ann.id == row_id:
            out = judgement.to_dict()
            return {k: out[k] for k in ("compliant", "broken_rules", "notice", "allowed_minutes") if k in out}
    return None


async def post_maintenance(request: web.Request) -> web.Response:
    """Announce maintenance for a policy (admin). It is judged against the contract's rules in
    every report; a kind the policy does not accept is refused here already."""
    require_admin(request)
    state = request.app[STATE]
    data = await read_json(request)
    if is_series_request(data):   # recurring maintenance: `rrule` and `duration` instead of `end`
        return await post_series(request, data)
    m = validate_announcement(data, state.policies, store.utcnow())
    policy = state.policies[m.policy]
    async with state.sessionmaker() as session:
        row = await store.add_maintenance(session, m.policy, m.kind, m.start, m.end, m.note, recorded_by="api",
                                          stated_announced=m.announced, author=m.author)
        record = record_of(row)
        judgement = judgement_of(policy, await store.list_maintenance(session, m.policy), row.id)
        await session.commit()
    return json_response({**record, "judgement": judgement}, status=201)


async def get_maintenance(request: web.Request) -> web.Response:
    """Every announcement, cancelled ones with their cancellation, and every recurring series with
its cancelled and next occurrences; of one policy with ?policy=."""
    require_read(request)
    state = request.app[STATE]
    name = request.query.get("policy")
    if name is not None:
        policy_named(request, name)
    async with state.sessionmaker() as session:
        rows = await store.list_maintenance(session, name)
        series = await store.list_maintenance_series(session, name)
    now = store.utcnow()
    return json_response({"maintenance": [record_of(r) for r in rows],
                          "series": [series_record(r, c, now) for r, c in series]})


def cancel_reason_from(query_reason: str | None, body: Any) -> str:
    from_body = None
    if body is not None:
        try:
            from_body = CancelIn.model_validate(body).reason
        except ValidationError as err:
            raise RequestError(describe(err), 422) from None
    if from_body is not None and query_reason is not None:
        raise RequestError("reason: give it in the JSON body or in the query, not both", 422)
    reason = from_body if from_body is not None else (query_reason or "")
    if "\x00" in reason:
        raise RequestError("reason: contains a NUL character (\\u0000)", 422)
    if len(reason) > 2000:
        raise RequestError("reason: at most 2000 characters", 422)
    return reason


async def delete_maintenance(request: web.Request) -> web.Response:
    """Cancel an announcement (admin): it stays listed, marked cancelled, and excludes nothing.
    404 for an unknown id, 409 when it was cancelled before (the first cancellation stands)."""
    require_admin(request)
    state = request.app[STATE]
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise RequestError(f"id: no maintenance announcement with id {raw!r}", 404)
    body = await read_json(request) if request.can_read_body else None
    reason = cancel_reason_from(request.query.get("reason"), body)
    async with state.sessionmaker() as session:
        row, cancelled = await store.cancel_maintenance(session, int(raw), cancelled_by="api", reason=reason)
        if row is None:
            raise RequestError(f"id: no maintenance announcement with id {raw}", 404)
        if not cancelled:
            raise RequestError(f"id: maintenance announcement {row.id} was already cancelled at "
                               f"{iso(row.cancelled_at)}; a cancellation stands (for a change, announce a new one)", 409)
        record = record_of(row)
        await session.commit()
    return json_response(record)


# -- recurring maintenance (collector.rules.recurrence) ----------------------------------------

# How many of a series' next occurrences a listing shows (and a new series' answer judges).
NEXT_SHOWN = 5


class SeriesIn(BaseModel):
    """A recurring maintenance: POST /api/v1/maintenance with `rrule` and `duration` (no `end`)."""
    model_config = ConfigDict(extra="forbid")

    @field_validator("announced", "start")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        try:
            return v.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    policy: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=32)
    announced: AwareDatetime | None = None
    # DTSTART: the first occurrence where it matches the rule; its local time in `timezone` is the
    # time of day the rule repeats at
    start: AwareDatetime
    rrule: str = Field(min_length=1, max_length=500, description="RFC 5545 RRULE value, e.g. FREQ=WEEKLY;BYDAY=SU")
    duration: str | int = Field(description="Each occurrence's length: 2h, 90m, PT2H or seconds")
    timezone: str = Field(default="UTC", max_length=64, description="IANA zone the rule repeats in (UTC by default)")
    note: str = Field(default="", max_length=2000)
    author: str = Field(default="", max_length=128)


class OccurrenceCancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    reason: str = Field(default="", max_length=2000)


def is_series_request(data: Any) -> bool:
    return isinstance(data, dict) and ("rrule" in data or "duration" in data)


def validate_series(data: Any, policies: Mapping[str, Policy], now: datetime) -> tuple[SeriesIn, Recurrence]:
    """A series as the API and the CLI accept it; RequestError naming the field otherwise (404
    for an unknown policy, 422 for the rest): the fields as for an announcement, then the rule
    (collector.rules.recurrence.parse_recurrence)."""
    if isinstance(data, dict) and "end" in data:
        raise RequestError("end: a recurring maintenance has a duration (each occurrence's length), not an end", 422)
    try:
        m = SeriesIn.model_validate(data)
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    policy = policies.get(m.policy)
    if policy is None:
        raise RequestError(f"policy: unknown policy {m.policy!r} (configured: {', '.join(sorted(policies))})", 404)
    if m.kind not in policy.maintenance:
        accepted = ", ".join(sorted(policy.maintenance)) or "none"
        raise RequestError(f"kind: policy {m.policy!r} accepts no maintenance of kind {m.kind!r} (accepted: {accepted})", 422)
    if m.announced is not None and m.announced > now + STATED_CLOCK_SKEW:
        raise RequestError(f"announced: {iso(m.announced)} is later than now ({iso(now)} by the collector's clock); "
                           "leave it out when notice is given now", 422)
    try:
        recurrence = parse_recurrence(m.rrule, m.start, m.duration, m.timezone)
    except RecurrenceError as err:
        raise RequestError(str(err), 422) from None
    if recurrence.duration.total_seconds() != int(recurrence.duration.total_seconds()):
        raise RequestError("duration: whole seconds only", 422)
    return m, recurrence


def series_record(row: Any, cancellations: Sequence[Any], now: datetime) -> dict[str, Any]:
    """A stored series as the API and `maintenance list --format json` show it: the record, its
    cancelled occurrences and its next NEXT_SHOWN occurrences (in progress or ahead)."""
    series = series_of(row, cancellations)
    upcoming = []
    cancelled = {c.start: c for c in series.cancelled_occurrences}
    for start in series.recurrence.next_starts(now - series.recurrence.duration, NEXT_SHOWN + 1):
        end = start + series.recurrence.duration
        if end <= now or (series.cancelled_at is not None and start > series.cancelled_at):
            continue
        c = cancelled.get(start)
        upcoming.append({"start": iso(start), "end": iso(end), "cancelled": c is not None,
                         "cancelled_at": iso(c.cancelled_at) if c else None})
    return {"id": row.id, "policy": row.policy, "kind": row.kind, "start": iso(row.start), "rrule": row.rrule,
            "duration": format_duration(row.duration_seconds), "duration_seconds": row.duration_seconds,
            "timezone": row.timezone, "note": row.note or "", "recorded_at": iso(row.recorded_at),
            "recorded_by": row.recorded_by, "author": row.author or "", "stated_announced": iso(row.stated_announced),
            "cancelled": row.cancelled_at is not None, "cancelled_at": iso(row.cancelled_at),
            "cancelled_by": row.cancelled_by, "cancel_reason": row.cancel_reason,
            "cancelled_occurrences": [{"start": iso(c.start), "end": iso(c.start + series.recurrence.duration),
                                       "cancelled_at": iso(c.cancelled_at), "cancelled_by": c.cancelled_by,
                                       "cancel_reason": c.cancel_reason} for c in cancellations],
            "next_occurrences": upcoming[:NEXT_SHOWN]}


async def occurrence_judgements(session: Any, policy: Policy, record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """How the policy's rules judge the series' next occurrences among the policy's other
    maintenance (budgets are shared), each as if announced when the series was recorded."""
    upcoming = record["next_occurrences"]
    if not upcoming:
        return []
    first, last = parse_rfc3339(upcoming[0]["start"]), parse_rfc3339(upcoming[-1]["end"])
    months = judged_range(policy.tz, first, last)
    announcements = [a for a in await load_maintenance(session, policy.name, include_cancelled=True,
                                                       start=months[0], end=months[1])
                     if a.kind in policy.maintenance]
    try:
        judgements = judge_maintenance(policy, announcements)
    except (PolicyError, ValueError):
        return None
    wanted = {o["start"] for o in upcoming}
    out = []
    for ann, judgement in zip(announcements, judgements):
        if getattr(ann, "series_id", None) == record["id"] and iso(ann.start) in wanted:
            j = judgement.to_dict()
            out.append({"start": iso(ann.start), "end": iso(ann.end),
                        **{k: j[k] for k in ("compliant", "broken_rules", "notice", "allowed_minutes") if k in j}})
    return out


async def record_series(session: Any, m: SeriesIn, recurrence: Recurrence, policy: Policy, *,
                        recorded_by: str) -> dict[str, Any]:
    """Store a validated series; its record with the judgement of its next occurrences."""
    row = await store.add_maintenance_series(
        session, m.policy, m.kind, recurrence.start, recurrence.rrule, int(recurrence.duration.total_seconds()),
        recurrence.timezone, m.note, recorded_by=recorded_by, stated_announced=m.announced, author=m.author)
    record = series_record(row, [], store.utcnow())
    return {**record, "judgement": await occurrence_judgements(session, policy, record)}


async def post_series(request: web.Request, data: Any) -> web.Response:
    state = request.app[STATE]
    m, recurrence = validate_series(data, state.policies, store.utcnow())
    async with state.sessionmaker() as session:
        out = await record_series(session, m, recurrence, state.policies[m.policy], recorded_by="api")
        await session.commit()
    return json_response(out, status=201)


def _series_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise RequestError(f"id: no maintenance series with id {raw!r}", 404)
    return int(raw)


async def delete_series(request: web.Request) -> web.Response:
    """Cancel a whole series (admin): it stays listed, cancelled; no occurrence that starts after
    the cancellation excludes anything (those that started before stand). 404 unknown, 409 twice."""
    require_admin(request)
    state = request.app[STATE]
    series_id = _series_id(request.match_info["id"])
    body = await read_json(request) if request.can_read_body else None
    reason = cancel_reason_from(request.query.get("reason"), body)
    async with state.sessionmaker() as session:
        row, cancelled = await store.cancel_maintenance_series(session, series_id, cancelled_by="api", reason=reason)
        if row is None:
            raise RequestError(f"id: no maintenance series with id {series_id}", 404)
        if not cancelled:
            raise RequestError(f"id: maintenance series {row.id} was already cancelled at {iso(row.cancelled_at)}; "
                               "a cancellation stands (for a change, record a new series)", 409)
        _, cancellations = await store.maintenance_series(session, row.id)
        record = series_record(row, cancellations, store.utcnow())
        await session.commit()
    return json_response(record)


async def cancel_series_occurrence(session: Any, series_id: int, start: datetime, reason: str, *,
                                   cancelled_by: str) -> dict[str, Any]:
    """Cancel one occurrence of a series by its start; RequestError: 404 for an unknown series,
    422 when `start` is not one of its occurrences, 409 when it was cancelled before (the first
    cancellation stands) or the whole series was cancelled before the occurrence began."""
    row, _ = await store.maintenance_series(session, series_id)
    if row is None:
        raise RequestError(f"id: no maintenance series with id {series_id}", 404)
    series = series_of(row)
    start = start.astimezone(timezone.utc)
    if not series.recurrence.is_occurrence(start):
        near = series.recurrence.next_starts(start, 1)
        hint = f" (the next one starts {iso(near[0])})" if near else ""
        raise RequestError(f"start: {iso(start)} is not the start of an occurrence of series {series_id} "
                           f"({row.rrule} from {iso(row.start)} in {row.timezone}){hint}", 422)
    if row.cancelled_at is not None and start > row.cancelled_at:
        raise RequestError(f"start: series {series_id} was cancelled at {iso(row.cancelled_at)}, before this "
                           "occurrence began: it is cancelled already", 409)
    cancellation, created = await store.cancel_occurrence(session, series_id, start, cancelled_by=cancelled_by,
                                                          reason=reason)
    if not created:
        raise RequestError(f"start: the occurrence of series {series_id} at {iso(start)} was already cancelled at "
                           f"{iso(cancellation.cancelled_at)}; a cancellation stands", 409)
    return {"series_id": series_id, "policy": row.policy, "kind": row.kind, "start": iso(start),
            "end": iso(start + series.recurrence.duration), "cancelled": True,
            "cancelled_at": iso(cancellation.cancelled_at), "cancelled_by": cancellation.cancelled_by,
            "cancel_reason": cancellation.cancel_reason}


async def delete_occurrence(request: web.Request) -> web.Response:
    """DELETE /api/v1/maintenance/series/{id}/occurrences/{start} (admin): cancel one occurrence."""
    require_admin(request)
    state = request.app[STATE]
    series_id = _series_id(request.match_info["id"])
    raw = request.match_info["start"]
    try:
        start = parse_rfc3339(raw)
    except (ValueError, OverflowError):
        raise RequestError(f"start: {raw!r} is not an RFC 3339 timestamp with an offset", 422) from None
    body = await read_json(request) if request.can_read_body else None
    reason = cancel_reason_from(request.query.get("reason"), body)
    async with state.sessionmaker() as session:
        out = await cancel_series_occurrence(session, series_id, start, reason, cancelled_by="api")
        await session.commit()
    return json_response(out)


async def post_occurrence_cancellation(request: web.Request) -> web.Response:
    """POST /api/v1/maintenance/series/{id}/cancellations {start, reason} (admin): the same as
    DELETE .../occurrences/{start}, for clients that cannot put a timestamp in a path."""
    require_admin(request)
    state = request.app[STATE]
    series_id = _series_id(request.match_info["id"])
    try:
        body = OccurrenceCancelIn.model_validate(await read_json(request))
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    reason = cancel_reason_from(None, {"reason": body.reason})
    async with state.sessionmaker() as session:
        out = await cancel_series_occurrence(session, series_id, body.start, reason, cancelled_by="api")
        await session.commit()
    return json_response(out)
