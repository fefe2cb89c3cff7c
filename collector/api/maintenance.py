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
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector import store
from collector.db import Maintenance
from collector.errors import RequestError, describe
from collector.reporting import announcement_of
from collector.rules.maintenance import STATED_CLOCK_SKEW, judge_maintenance
from collector.rules.model import iso
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
    m = validate_announcement(await read_json(request), state.policies, store.utcnow())
    policy = state.policies[m.policy]
    async with state.sessionmaker() as session:
        row = await store.add_maintenance(session, m.policy, m.kind, m.start, m.end, m.note, recorded_by="api",
                                          stated_announced=m.announced, author=m.author)
        record = record_of(row)
        judgement = judgement_of(policy, await store.list_maintenance(session, m.policy), row.id)
        await session.commit()
    return json_response({**record, "judgement": judgement}, status=201)


async def get_maintenance(request: web.Request) -> web.Response:
    """Every announcement, cancelled ones with their cancellation; of one policy with ?policy=."""
    require_read(request)
    state = request.app[STATE]
    name = request.query.get("policy")
    if name is not None:
        policy_named(request, name)
    async with state.sessionmaker() as session:
        rows = await store.list_maintenance(session, name)
    return json_response({"maintenance": [record_of(r) for r in rows]})


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
