"""What the status pages show of incidents: the open ones at the top of the front page (the
partial `_incidents_open.html`), and `GET /incidents`, open ones then 12 months of history, each
with its updates, its links to verified outage windows and maintenance, and its post-mortem link.

Numezis SaaS SLA §9: the page shows ongoing incidents and the history of the last 12 months;
§6: updates every 2-4 hours for P1/P2, so each open incident says how old its latest update is,
and a major or critical one without an update for longer than that says so. Reads are a few
statements whatever the number of incidents (collector.incidents); the views are built without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence
from urllib.parse import quote

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import incidents
from collector.db import OutageWindow
from collector.incidents import HISTORY, UPDATE_EVERY, IncidentRecord
from collector.rules.periods import period_of
from collector.rules.policy import Policy

from .format import duration, moment
from .pages import outage_api_url, policy_url, service_url

__all__ = ["IncidentView", "IncidentsPage", "open_incidents", "incident_history", "incidents_page_data",
           "view_of", "UPDATE_EVERY"]

UTC = timezone.utc
STATUS_TEXT = {"investigating": "Investigating", "identified": "Identified", "monitoring": "Monitoring",
               "resolved": "Resolved"}
IMPACT_TEXT = {"none": "No impact", "minor": "Minor impact", "major": "Major impact", "critical": "Critical impact"}
_SEVERITY = {"critical": 0, "major": 1, "minor": 2, "none": 3}


@dataclass(frozen=True)
class UpdateView:
    status: str
    status_text: str
    message: str
    at: datetime
    by: str


@dataclass(frozen=True)
class LinkView:
    kind: str                 # "window" or "maintenance"
    id: int
    text: str
    url: str                  # for a person: the month's SLA report (or the API where the policy is gone)
    json_url: str             # the record in the API


@dataclass(frozen=True)
class ServiceLink:
    name: str
    url: str | None           # its page, when the collector still has the policy


@dataclass(frozen=True)
class IncidentView:
    id: int
    anchor: str
    title: str
    impact: str
    impact_text: str
    status: str
    status_text: str
    services: list[ServiceLink]
    created_at: datetime
    resolved_at: datetime | None
    lasted: str | None        # opened to resolved, for a resolved one
    updates: list[UpdateView]  # newest first
    latest: UpdateView
    latest_age: str           # how long ago the latest update was posted
    update_overdue: bool
    windows: list[LinkView]
    maintenance: list[LinkView]
    postmortem_url: str | None
    month: str                # "YYYY-MM" of its opening, UTC

    @property
    def service_names(self) -> str:
        return ", ".join(s.name for s in self.services)


@dataclass(frozen=True)
class IncidentsPage:
    now: datetime
    open: list[IncidentView]
    months: list[tuple[str, list[IncidentView]]]  # resolved in the last 12 months, newest first, by month
    resolved_count: int


def view_of(rec: IncidentRecord, now: datetime, policies: Mapping[str, Policy],
            window_ends: Mapping[tuple[str, datetime], datetime | None] | None = None) -> IncidentView:
    """The page's view of one incident. `window_ends`: the linked windows' current ends (absent:
    the window is no longer stored as it was linked, e.g. judged again)."""
    i = rec.incident
    updates = [UpdateView(u.status, STATUS_TEXT.get(u.status, u.status), u.message, u.recorded_at,
                          u.recorded_by + (f", {u.author}" if u.author else "")) for u in reversed(rec.updates)]
    latest = updates[0] if updates else UpdateView(rec.status, STATUS_TEXT[rec.status], "", i.created_at, i.created_by)
    windows, maintenance = [], []
    for link in rec.links:
        policy = policies.get(link.policy)
        report = policy_url(link.policy, period_of(link.start, policy.tz)) if policy is not None else ""
        if link.kind == "window":
            api = outage_api_url(link.policy, link.start)
            text = f"Verified outage of {link.policy} from {moment(link.start)}"
            if window_ends is not None:
                if (link.policy, link.start) not in window_ends:
                    text += " (no longer stored as linked)"
                elif window_ends[(link.policy, link.start)] is None:
                    text += ", ongoing"
                else:
                    end = window_ends[(link.policy, link.start)]
                    text += f" to {moment(end)} ({duration((end - link.start).total_seconds())})"
            windows.append(LinkView("window", link.target_id, text, report or api, api))
        else:
            api = f"/api/v1/maintenance?policy={quote(link.policy, safe='')}"
            maintenance.append(LinkView("maintenance", link.target_id,
                                        f"Maintenance {link.target_id} of {link.policy} from {moment(link.start)}",
                                        report or api, api))
    return IncidentView(
        id=i.id, anchor=f"incident-{i.id}", title=i.title, impact=i.impact,
        impact_text=IMPACT_TEXT.get(i.impact, i.impact),
        status=rec.status, status_text=STATUS_TEXT.get(rec.status, rec.status),
        services=[ServiceLink(n, service_url(n) if n in policies else None) for n in i.policies],
        created_at=i.created_at, resolved_at=i.resolved_at,
        lasted=duration((i.resolved_at - i.created_at).total_seconds()) if i.resolved_at else None,
        updates=updates, latest=latest, latest_age=duration(max(0.0, (now - latest.at).total_seconds())),
        update_overdue=rec.update_overdue(now), windows=windows, maintenance=maintenance,
        postmortem_url=i.postmortem_url, month=f"{i.created_at.astimezone(UTC):%Y-%m}")


def _open_first(views: list[IncidentView]) -> list[IncidentView]:
    # the worst impact first, then the newest
    return sorted(views, key=lambda v: (_SEVERITY.get(v.impact, 9), -v.created_at.timestamp(), -v.id))


async def open_incidents(session: AsyncSession, now: datetime, policies: Mapping[str, Policy]) -> list[IncidentView]:
    """The open incidents, worst impact first, each with its latest update: what the front page's
    `_incidents_open.html` shows (as `open_incidents`)."""
    rows = await incidents.list_incidents(session, state="open")
    return _open_first([view_of(r, now, policies) for r in rows])


async def incident_history(session: AsyncSession, now: datetime, policies: Mapping[str, Policy]) -> list[IncidentView]:
    """The incidents resolved in the last 12 months, newest first, with their updates and links."""
    rows = await incidents.list_incidents(session, state="resolved", since=now - HISTORY)
    ends = await _window_ends(session, rows)
    return [view_of(r, now, policies, ends) for r in rows]


async def incidents_page_data(session: AsyncSession, now: datetime, policies: Mapping[str, Policy]) -> IncidentsPage:
    """Everything GET /incidents shows: open incidents, then 12 months of history by month."""
    rows = await incidents.list_incidents(session, since=now - HISTORY)
    ends = await _window_ends(session, rows)
    views = [view_of(r, now, policies, ends) for r in rows]
    history = [v for v in views if v.resolved_at is not None]
    months: list[tuple[str, list[IncidentView]]] = []
    for v in history:
        if not months or months[-1][0] != v.month:
            months.append((v.month, []))
        months[-1][1].append(v)
    return IncidentsPage(now, _open_first([v for v in views if v.resolved_at is None]), months, len(history))


async def _window_ends(session: AsyncSession,
                       rows: Sequence[IncidentRecord]) -> dict[tuple[str, datetime], datetime | None]:
    """{(policy, start): end} of the stored windows the incidents link to, one statement."""
    wanted: dict[str, set[datetime]] = {}
    for rec in rows:
        for link in rec.links:
            if link.kind == "window":
                wanted.setdefault(link.policy, set()).add(link.start)
    if not wanted:
        return {}
    stmt = select(OutageWindow.policy, OutageWindow.start, OutageWindow.end).where(or_(*(
        and_(OutageWindow.policy == policy, OutageWindow.start.in_(sorted(starts)))
        for policy, starts in sorted(wanted.items()))))
    return {(r.policy, r.start): r.end for r in (await session.execute(stmt)).all()}
