"""Maintenance announcements: recorded by the admin, listed for everyone, judged in every report."""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector import store
from collector.errors import RequestError, describe
from collector.reporting import load_maintenance

from .common import STATE, json_response, policy_named, read_json, require_admin, require_read


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("announced", "start", "end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        try:
            return v.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    policy: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=32)
    announced: AwareDatetime
    start: AwareDatetime
    end: AwareDatetime
    note: str = Field(default="", max_length=2000)

async def post_maintenance(request: web.Request) -> web.Response:
    """Announce maintenance for a policy (admin). It is judged against the contract's rules in
    every report; a kind the policy does not accept is refused here already."""
    require_admin(request)
    state = request.app[STATE]
    try:
        m = MaintenanceIn.model_validate(await read_json(request))
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    policy = policy_named(request, m.policy)
    if m.kind not in policy.maintenance:
        accepted = ", ".join(sorted(policy.maintenance)) or "none"
        raise RequestError(f"kind: policy {m.policy!r} accepts no maintenance of kind {m.kind!r} (accepted: {accepted})", 422)
    if m.end <= m.start:
        raise RequestError("end: must be after start", 422)
    utc = timezone.utc
    async with state.sessionmaker() as session:
        row = await store.add_maintenance(session, m.policy, m.kind, m.announced.astimezone(utc),
                                          m.start.astimezone(utc), m.end.astimezone(utc), m.note)
        await session.commit()
    return json_response({"id": row.id, "policy": row.policy, "kind": row.kind, "announced": row.announced,
                  "start": row.start, "end": row.end, "note": row.note}, status=201)

async def get_maintenance(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    policy = policy_named(request, request.query.get("policy", ""))
    async with state.sessionmaker() as session:
        rows = await load_maintenance(session, policy.name)
    return json_response({"maintenance": [r.to_dict() for r in rows]})
