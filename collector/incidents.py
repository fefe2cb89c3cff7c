"""Incidents: what an operator tells the status page's readers about an event, and the updates
posted on it until it is resolved.

An incident names the services (policies) it affects and its impact; updates carry a status
(investigating, identified, monitoring, resolved) and free text. Everything is stamped with the
collector's own clock and who recorded it ("api" or "cli"), never with a time the caller gives:
the page is what customers read (Numezis SaaS SLA §6: updates every 2-4 hours for P1/P2; §9: a
history of incidents for 12 months). Updates and links are only ever added; the "resolved" update
sets `resolved_at` once, and after it the incident takes no more updates (a recurrence is a new
incident). The same functions serve the API and `uptime-collector incidents`; like
collector.store they never commit, so a refused request leaves nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from collector.db import Incident, IncidentLink, IncidentUpdate, Maintenance, OutageWindow
from collector.errors import RequestError
from collector.rules.model import iso
from collector.store import utcnow

__all__ = ["STATUSES", "IMPACTS", "HISTORY", "UPDATE_EVERY", "IncidentRecord", "record_of", "check_postmortem_url",
           "open_incident", "post_update", "add_links", "set_postmortem", "load_incident", "list_incidents"]

STATUSES = ("investigating", "identified", "monitoring", "resolved")
IMPACTS = ("none", "minor", "major", "critical")
# Numezis SaaS SLA §9: the status page shows the history of the last 12 months.
HISTORY = timedelta(days=365)
# Numezis SaaS SLA §6: "updates every 2-4 hours for P1/P2": an open major or critical incident
# whose newest update is older than this is shown as overdue for one.
UPDATE_EVERY = timedelta(hours=4)
URGENT_IMPACTS = frozenset({"major", "critical"})
# Incident, window and maintenance ids are database integers.
MAX_ID = 2**31 - 1
MAX_URL = 2000


@dataclass
class IncidentRecord:
    """An incident with its updates (oldest first) and links (in the order they were made)."""

    incident: Incident
    updates: list[IncidentUpdate]
    links: list[IncidentLink]

    @property
    def latest(self) -> IncidentUpdate | None:
        return self.updates[-1] if self.updates else None

    @property
    def status(self) -> str:
        return self.latest.status if self.latest is not None else "investigating"

    @property
    def is_open(self) -> bool:
        return self.incident.resolved_at is None

    def update_overdue(self, now: datetime) -> bool:
        """Open, major or critical, and no update for longer than UPDATE_EVERY."""
        i = self.incident
        return self.is_open and i.impact in URGENT_IMPACTS and now - i.updated_at > UPDATE_EVERY


def record_of(rec: IncidentRecord) -> dict[str, Any]:
    """An incident as the API and `incidents show --format json` give it."""
    i = rec.incident
    return {
        "id": i.id, "title": i.title, "impact": i.impact, "policies": list(i.policies), "status": rec.status,
        "open": rec.is_open, "created_at": iso(i.created_at), "created_by": i.created_by, "author": i.author or "",
        "updated_at": iso(i.updated_at), "resolved_at": iso(i.resolved_at),
        "postmortem_url": i.postmortem_url, "postmortem_at": iso(i.postmortem_at), "postmortem_by": i.postmortem_by,
        "updates": [{"id": u.id, "status": u.status, "message": u.message, "recorded_at": iso(u.recorded_at),
                     "recorded_by": u.recorded_by, "author": u.author or ""} for u in rec.updates],
        "windows": [_link_json(link) for link in rec.links if link.kind == "window"],
        "maintenance": [_link_json(link) for link in rec.links if link.kind == "maintenance"],
    }


def _link_json(link: IncidentLink) -> dict[str, Any]:
    return {"id": link.target_id, "policy": link.policy, "start": iso(link.start), "linked_at": iso(link.linked_at),
            "linked_by": link.linked_by}


def check_postmortem_url(value: str, field: str = "postmortem_url") -> str:
    """An absolute http or https URL with a host (a page the reader can open), else RequestError."""
    text = value.strip()
    if not text:
        raise RequestError(f"{field}: must not be empty", 422)
    if len(text) > MAX_URL:
        raise RequestError(f"{field}: at most {MAX_URL} characters", 422)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise RequestError(f"{field}: must not contain spaces or control characters", 422)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as err:
        raise RequestError(f"{field}: {text[:80]!r} is not a URL ({err})", 422) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RequestError(f"{field}: {text[:80]!r} is not an http or https URL with a host", 422)
    return text


def check_policies(names: Sequence[str], policies: Mapping[str, Any], field: str = "policies") -> list[str]:
    """The affected policies, each in force, duplicates dropped (order kept)."""
    out: list[str] = []
    for index, name in enumerate(names):
        if name not in policies:
            raise RequestError(f"{field}[{index}]: unknown policy {name!r} "
                               f"(configured: {', '.join(sorted(policies)) or 'none'})", 422)
        if name not in out:
            out.append(name)
    return out


async def _targets(session: AsyncSession, windows: Iterable[int], maintenance: Iterable[int],
                   affected: Sequence[str]) -> list[tuple[str, int, str, datetime]]:
    """(kind, id, policy, start) of every window and announcement to link, in the order given;
    RequestError naming the field for one that does not exist or is of a policy not affected."""
    found: list[tuple[str, int, str, datetime]] = []
    for field, model, kind in (("windows", OutageWindow, "window"), ("maintenance", Maintenance, "maintenance")):
        ids = list(dict.fromkeys(windows if kind == "window" else maintenance))
        if not ids:
            continue
        rows = {r.id: r for r in (await session.execute(
            select(model.id, model.policy, model.start).where(model.id.in_(ids)))).all()}
        what = "verified outage window" if kind == "window" else "maintenance announcement"
        for index, target in enumerate(ids):
            row = rows.get(target)
            if row is None:
                raise RequestError(f"{field}[{index}]: no {what} with id {target}", 422)
            if row.policy not in affected:
                raise RequestError(f"{field}[{index}]: {what} {target} is of policy {row.policy!r}, which the "
                                   f"incident does not affect ({', '.join(affected)})", 422)
            found.append((kind, target, row.policy, row.start))
    return found


async def _link(session: AsyncSession, incident_id: int, targets: Sequence[tuple[str, int, str, datetime]],
                existing: Sequence[IncidentLink], linked_by: str, now: datetime) -> None:
    # a window keeps its policy and start when the evaluator gives it a new row (it ended):
    # linking the new id of a window linked before adds nothing
    have = {(link.kind, link.target_id) for link in existing} | \
        {(link.kind, link.policy, link.start) for link in existing if link.kind == "window"}
    for kind, target, policy, start in targets:
        if (kind, target) in have or (kind == "window" and (kind, policy, start) in have):
            continue
        session.add(IncidentLink(incident_id=incident_id, kind=kind, target_id=target, policy=policy, start=start,
                                 linked_at=now, linked_by=linked_by))
        have |= {(kind, target), (kind, policy, start)}
    await session.flush()


async def open_incident(session: AsyncSession, *, title: str, impact: str, policies: Sequence[str], status: str,
                        message: str, recorded_by: str, author: str = "", windows: Sequence[int] = (),
                        maintenance: Sequence[int] = (), postmortem_url: str | None = None) -> IncidentRecord:
    """Record a new incident with its first update (and links, and a post-mortem link if given).

    1. Check the links (before anything is written). 2. Insert the incident, stamped now.
    3. Insert its first update; a first update "resolved" records an incident already over.
    4. Insert the links."""
    targets = await _targets(session, windows, maintenance, policies)
    now = utcnow()
    incident = Incident(title=title, impact=impact, policies=list(policies), created_at=now, created_by=recorded_by,
                        author=author, updated_at=now, resolved_at=now if status == "resolved" else None,
                        postmortem_url=postmortem_url, postmortem_at=now if postmortem_url else None,
                        postmortem_by=recorded_by if postmortem_url else None)
    session.add(incident)
    await session.flush()
    session.add(IncidentUpdate(incident_id=incident.id, status=status, message=message, recorded_at=now,
                               recorded_by=recorded_by, author=author))
    await _link(session, incident.id, targets, [], recorded_by, now)
    found = await load_incident(session, incident.id)
    assert found is not None
    return found


async def _refused(session: AsyncSession, incident_id: int, what: str) -> RequestError:
    row = await session.get(Incident, incident_id, populate_existing=True)
    if row is None:
        return RequestError(f"id: no incident with id {incident_id}", 404)
    return RequestError(f"id: incident {incident_id} was resolved at {iso(row.resolved_at)} and takes no more "
                        f"{what} (for a recurrence, open a new incident)", 409)


async def post_update(session: AsyncSession, incident_id: int, *, status: str, message: str, recorded_by: str,
                      author: str = "") -> IncidentRecord:
    """Append an update to an open incident; "resolved" resolves it. 404 for an unknown incident,
    409 for a resolved one. The conditional UPDATE takes the incident's row lock, so two updates
    racing are recorded one after the other and only one of them can resolve it."""
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now}
    if status == "resolved":
        values["resolved_at"] = now
    done = await session.execute(
        update(Incident).where(Incident.id == incident_id, Incident.resolved_at.is_(None)).values(**values)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise await _refused(session, incident_id, "updates")
    session.add(IncidentUpdate(incident_id=incident_id, status=status, message=message, recorded_at=now,
                               recorded_by=recorded_by, author=author))
    await session.flush()
    found = await load_incident(session, incident_id, refresh=True)
    assert found is not None
    return found


async def add_links(session: AsyncSession, incident_id: int, *, windows: Sequence[int] = (),
                    maintenance: Sequence[int] = (), linked_by: str) -> IncidentRecord:
    """Link windows and announcements to an incident, open or resolved (the evidence is often
    found afterwards); a link made before is kept as it was. 404 for an unknown incident."""
    rec = await load_incident(session, incident_id)
    if rec is None:
        raise RequestError(f"id: no incident with id {incident_id}", 404)
    targets = await _targets(session, windows, maintenance, rec.incident.policies)
    await _link(session, incident_id, targets, rec.links, linked_by, utcnow())
    found = await load_incident(session, incident_id)
    assert found is not None
    return found


async def set_postmortem(session: AsyncSession, incident_id: int, url: str, *, by: str) -> IncidentRecord:
    """Set the incident's post-mortem link, once: 409 when it has one (what readers were pointed
    to stays), 404 for an unknown incident."""
    done = await session.execute(
        update(Incident).where(Incident.id == incident_id, Incident.postmortem_url.is_(None))
        .values(postmortem_url=url, postmortem_at=utcnow(), postmortem_by=by)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        row = await session.get(Incident, incident_id, populate_existing=True)
        if row is None:
            raise RequestError(f"id: no incident with id {incident_id}", 404)
        raise RequestError(f"postmortem_url: incident {incident_id} has had a post-mortem link since "
                           f"{iso(row.postmortem_at)} ({row.postmortem_url}); it stands", 409)
    found = await load_incident(session, incident_id, refresh=True)
    assert found is not None
    return found


async def load_incident(session: AsyncSession, incident_id: int, *, refresh: bool = False) -> IncidentRecord | None:
    if not 0 < incident_id <= MAX_ID:
        return None
    row = await session.get(Incident, incident_id, populate_existing=refresh)
    if row is None:
        return None
    return (await _with_details(session, [row]))[0]


async def list_incidents(session: AsyncSession, *, state: str | None = None,
                         since: datetime | None = None) -> list[IncidentRecord]:
    """Incidents newest first: all, only open ones (`state="open"`) or only resolved ones; with
    `since`, those open or resolved at or after it (the page's 12 months, the feed's days)."""
    stmt = select(Incident).order_by(Incident.created_at.desc(), Incident.id.desc())
    if state == "open":
        stmt = stmt.where(Incident.resolved_at.is_(None))
    elif state == "resolved":
        stmt = stmt.where(Incident.resolved_at.is_not(None))
    if since is not None:
        stmt = stmt.where(or_(Incident.resolved_at.is_(None), Incident.resolved_at >= since))
    return await _with_details(session, list((await session.scalars(stmt)).all()))


async def _with_details(session: AsyncSession, rows: Sequence[Incident]) -> list[IncidentRecord]:
    """The incidents' updates and links, two statements whatever their number."""
    ids = [r.id for r in rows]
    updates: dict[int, list[IncidentUpdate]] = {i: [] for i in ids}
    links: dict[int, list[IncidentLink]] = {i: [] for i in ids}
    for chunk in (ids[i:i + 1000] for i in range(0, len(ids), 1000)):
        for u in (await session.scalars(select(IncidentUpdate).where(IncidentUpdate.incident_id.in_(chunk))
                                        .order_by(IncidentUpdate.recorded_at, IncidentUpdate.id))).all():
            updates[u.incident_id].append(u)
        for link in (await session.scalars(select(IncidentLink).where(IncidentLink.incident_id.in_(chunk))
                                           .order_by(IncidentLink.id))).all():
            links[link.incident_id].append(link)
    return [IncidentRecord(r, updates[r.id], links[r.id]) for r in rows]
