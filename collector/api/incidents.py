"""Incidents over HTTP: opened, updated and linked by the admin, read by everyone (as the status
API is, unless public_reads is off).

    POST /api/v1/incidents                   open one, with its first update (201)
    GET  /api/v1/incidents[?state=open|resolved]
    GET  /api/v1/incidents/{id}
    POST /api/v1/incidents/{id}/updates      append an update; status "resolved" resolves it (201)
    POST /api/v1/incidents/{id}/links        link verified outage windows and maintenance announcements
    POST /api/v1/incidents/{id}/postmortem   set the post-mortem link, once

Times are the collector's (collector.incidents): a body that states one (`created_at`,
`recorded_at`, ...) is refused as an unknown field. The same validation serves the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from collector import incidents
from collector.errors import RequestError, describe

from .common import STATE, json_response, read_json, require_admin, require_read

Status = Literal["investigating", "identified", "monitoring", "resolved"]
Impact = Literal["none", "minor", "major", "critical"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
Id = Annotated[int, Field(strict=True, gt=0, le=incidents.MAX_ID)]  # strict: true is no id
# An incident lists its links in one response: a few dozen at most in practice.
MAX_LINKS = 100


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class IncidentIn(_In):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    impact: Impact
    # the services (contract policies) affected, by name
    policies: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(min_length=1,
                                                                                          max_length=100)
    status: Status = "investigating"
    message: Text
    author: str = Field(default="", max_length=128)
    windows: list[Id] = Field(default_factory=list, max_length=MAX_LINKS)
    maintenance: list[Id] = Field(default_factory=list, max_length=MAX_LINKS)
    postmortem_url: str | None = None

    @field_validator("postmortem_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _checked_url(v)


class UpdateIn(_In):
    status: Status
    message: Text
    author: str = Field(default="", max_length=128)


class LinksIn(_In):
    windows: list[Id] = Field(default_factory=list, max_length=MAX_LINKS)
    maintenance: list[Id] = Field(default_factory=list, max_length=MAX_LINKS)


class PostmortemIn(_In):
    postmortem_url: str

    @field_validator("postmortem_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _checked_url(v)


def _checked_url(value: str) -> str:
    try:
        return incidents.check_postmortem_url(value, "")
    except RequestError as err:
        # pydantic puts the field's name in front
        raise ValueError(err.message.removeprefix(": ")) from None


def _validated(model: type[_In], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None


def validate_incident(data: Any, policies: Mapping[str, Any]) -> IncidentIn:
    """A new incident as the API and the CLI accept it; RequestError (422) naming the field."""
    m = _validated(IncidentIn, data)
    m.policies = incidents.check_policies(m.policies, policies)
    return m


def validate_update(data: Any) -> UpdateIn:
    return _validated(UpdateIn, data)


def validate_links(data: Any) -> LinksIn:
    m = _validated(LinksIn, data)
    if not m.windows and not m.maintenance:
        raise RequestError("windows: give at least one window or maintenance id to link", 422)
    return m


def validate_postmortem(data: Any) -> PostmortemIn:
    return _validated(PostmortemIn, data)


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= incidents.MAX_ID:
        raise RequestError(f"id: no incident with id {raw!r}", 404)
    return int(raw)


async def post_incident(request: web.Request) -> web.Response:
    """Open an incident (admin), with its first update; its time is the collector's."""
    require_admin(request)
    state = request.app[STATE]
    m = validate_incident(await read_json(request), state.policies)
    async with state.sessionmaker() as session:
        rec = await incidents.open_incident(
            session, title=m.title, impact=m.impact, policies=m.policies, status=m.status, message=m.message,
            author=m.author, recorded_by="api", windows=m.windows, maintenance=m.maintenance,
            postmortem_url=m.postmortem_url)
        out = incidents.record_of(rec)
        await session.commit()
    return json_response(out, status=201)


async def get_incidents(request: web.Request) -> web.Response:
    """Every incident, newest first; only open or only resolved ones with ?state=."""
    require_read(request)
    wanted = request.query.get("state")
    if wanted is not None and wanted not in ("open", "resolved"):
        raise RequestError(f"query parameter 'state': {wanted[:40]!r} is not open or resolved")
    async with request.app[STATE].sessionmaker() as session:
        rows = await incidents.list_incidents(session, state=wanted)
    return json_response({"incidents": [incidents.record_of(r) for r in rows]})


async def get_incident(request: web.Request) -> web.Response:
    require_read(request)
    incident_id = _incident_id(request)
    async with request.app[STATE].sessionmaker() as session:
        rec = await incidents.load_incident(session, incident_id)
    if rec is None:
        raise RequestError(f"id: no incident with id {incident_id}", 404)
    return json_response(incidents.record_of(rec))


async def post_incident_update(request: web.Request) -> web.Response:
    """Append an update (admin); "resolved" resolves the incident. 409 once it is resolved."""
    require_admin(request)
    incident_id = _incident_id(request)
    m = validate_update(await read_json(request))
    async with request.app[STATE].sessionmaker() as session:
        rec = await incidents.post_update(session, incident_id, status=m.status, message=m.message,
                                          author=m.author, recorded_by="api")
        out = incidents.record_of(rec)
        await session.commit()
    return json_response(out, status=201)


async def post_incident_links(request: web.Request) -> web.Response:
    """Link verified outage windows and maintenance announcements (admin) to an incident."""
    require_admin(request)
    incident_id = _incident_id(request)
    m = validate_links(await read_json(request))
    async with request.app[STATE].sessionmaker() as session:
        rec = await incidents.add_links(session, incident_id, windows=m.windows, maintenance=m.maintenance,
                                        linked_by="api")
        out = incidents.record_of(rec)
        await session.commit()
    return json_response(out)


async def post_incident_postmortem(request: web.Request) -> web.Response:
    """Set the post-mortem link (admin), once; 409 when the incident has one."""
    require_admin(request)
    incident_id = _incident_id(request)
    m = validate_postmortem(await read_json(request))
    async with request.app[STATE].sessionmaker() as session:
        rec = await incidents.set_postmortem(session, incident_id, m.postmortem_url, by="api")
        out = incidents.record_of(rec)
        await session.commit()
    return json_response(out)

