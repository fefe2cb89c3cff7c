"""The data each page shows, assembled from what the queries returned; no I/O here, so a page of
hundreds of services is computed (and rendered) in a worker thread without touching the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence
from urllib.parse import quote

from collector.rules.maintenance import check_kinds, judge_maintenance
from collector.rules.model import Announcement
from collector.rules.periods import period_of
from collector.rules.policy import Policy, PolicyError

from .format import duration
from .history import (
    Bar, Days, EvidenceView, ServiceState, current_state, daily_bars, evidence_view, period_summary, summarise_rounds,
)

__all__ = ["ServiceView", "Incident", "StatusPage", "build_status_page", "policy_url", "INCIDENT_MONTHS"]

UTC = timezone.utc
INCIDENT_MONTHS = 12
# A page lists at most this many outages and maintenance entries; older ones stay in the JSON API.
MAX_INCIDENTS = 200


def policy_url(name: str, period: str | None = None) -> str:
    url = f"/policies/{quote(name, safe='')}"
    return f"{url}/{period}" if period else url


@dataclass
class ServiceView:
    name: str
    description: str
    components: list[str]
    state: ServiceState
    bars: list[Bar]
    availability: float | None      # over the shown days that have data
    days_without_data: int
    url: str
    latest_period: str              # the policy's current month: a bar never links past it


@dataclass
class Incident:
    kind: str                 # "outage" | "maintenance"
    policy: str
    start: datetime
    end: datetime | None
    length: str               # "10 s", "1 h 5 min", "12 min so far"
    period: str               # the month (policy's time zone) whose report holds it
    window_id: int | None = None
    evidence: EvidenceView | None = None   # attached once loaded (StatusPage.attach_evidence)
    evidence_json: str = ""   # the API query that returns the full evidence
    maintenance: dict[str, Any] = field(default_factory=dict)  # kind, announced, note, compliant, broken_rules

    @property
    def month(self) -> str:
        """The UTC month it is listed under."""
        return f"{self.start.astimezone(UTC):%Y-%m}"

    @property
    def url(self) -> str:
        return policy_url(self.policy, self.period)


@dataclass
class StatusPage:
    now: datetime
    services: list[ServiceView]
    months: list[tuple[str, list[Incident]]]   # newest month first
    incidents_total: int
    incidents_cut: int
    counts: dict[str, int]

    def window_ids(self) -> list[int]:
        """The windows whose evidence the page shows."""
        return [i.window_id for _month, items in self.months for i in items if i.window_id is not None]

    def attach_evidence(self, evidence_by_id: dict[int, Any]) -> None:
        for _month, items in self.months:
            for i in items:
                if i.window_id is not None:
                    i.evidence = evidence_view(summarise_rounds(evidence_by_id.get(i.window_id)))


def _maintenance_views(policy: Policy, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Each announcement judged under its policy's contract rules (notice, window, limits)."""
    announcements = [Announcement(kind=r.kind, announced=r.announced, start=r.start, end=r.end, note=r.note or "")
                     for r in rows]
    accepted = [a for a in announcements if a.kind in policy.maintenance]
    judged: dict[int, Any] = {}
    try:
        check_kinds(policy, accepted)
        for ann, judgement in zip(accepted, judge_maintenance(policy, accepted)):
            judged[id(ann)] = judgement
    except (PolicyError, ValueError) as err:  # a rule the core refuses: say so rather than fail the page
        return [{"kind": a.kind, "announced": a.announced, "note": a.note, "compliant": False,
                 "broken_rules": [{"rule": "policy", "detail": str(err)}]} for a in announcements]
    out = []
    for ann in announcements:
        judgement = judged.get(id(ann))
        if judgement is None:
            kinds = ", ".join(policy.maintenance) or "none"
            out.append({"kind": ann.kind, "announced": ann.announced, "note": ann.note, "compliant": False,
                        "broken_rules": [{"rule": "kind", "detail": f"the contract does not accept {ann.kind!r} "
                                                                    f"maintenance (accepted: {kinds})"}]})
        else:
            out.append({"kind": ann.kind, "announced": ann.announced, "note": ann.note,
                        "compliant": judgement.compliant, "broken_rules": [dict(r) for r in judgement.broken_rules]})
    return out


def build_status_page(
    *,
    now: datetime,
    policies: dict[str, Policy],
    windows: Sequence[Any],
    maintenance: Sequence[Any],
    evidence_by_check: dict[str, set[int]],
    latest_by_check: dict[str, datetime],
    days: Days,
    grace: float,
) -> StatusPage:
    """1. Group windows and maintenance by policy (anything for a policy no longer configured is left out).
    2. Per service: current state, 90 daily bars, availability over the days with data.
    3. Outages and maintenance of the last 12 months, newest first, grouped by UTC month."""
    since = now - timedelta(days=365)
    windows_by: dict[str, list[Any]] = {}
    for w in windows:
        if w.policy in policies:
            windows_by.setdefault(w.policy, []).append(w)
    maint_by: dict[str, list[Any]] = {}
    for m in maintenance:
        if m.policy in policies:
            maint_by.setdefault(m.policy, []).append(m)

    services: list[ServiceView] = []
    entries: list[tuple] = []
    counts = {"up": 0, "outage": 0, "maintenance": 0, "nodata": 0}
    for name in sorted(policies):
        policy = policies[name]
        mine = windows_by.get(name, [])
        rows = maint_by.get(name, [])
        open_since = next((w.start for w in mine if w.end is None), None)
        active = [m for m in rows if m.start <= now < m.end]
        state = current_state(
            open_since=open_since,
            maintenance_until=max((m.end for m in active), default=None),
            maintenance_kind=", ".join(sorted({m.kind for m in active})) or None,
            latest_slots={c: latest_by_check.get(c) for c in policy.components},
            interval=policy.interval, grace=grace, now=now)
        counts[state.kind] += 1
        evidence = set().union(*(evidence_by_check.get(c, set()) for c in policy.components))
        bars = daily_bars([(w.start, w.end) for w in mine], evidence, days, [(m.start, m.end) for m in rows])
        availability, missing = period_summary(bars)
        services.append(ServiceView(name, policy.description, list(policy.components), state, bars, availability,
                                    missing, policy_url(name), period_of(now, policy.tz)))

        # entries are built in full only for the newest MAX_INCIDENTS
        entries.extend((w.start, "outage", name, w, None) for w in mine)
        for row, view in zip(rows, _maintenance_views(policy, rows)):
            if row.end > since:
                entries.append((row.start, "maintenance", name, row, view))

    entries.sort(key=lambda e: (e[0], e[1], e[2]), reverse=True)
    shown = [_incident(policies[name], row, kind, view, now) for _start, kind, name, row, view in entries[:MAX_INCIDENTS]]
    total = len(entries)
    months: list[tuple[str, list[Incident]]] = []
    for incident in shown:
        if not months or months[-1][0] != incident.month:
            months.append((incident.month, []))
        months[-1][1].append(incident)
    return StatusPage(now, services, months, total, total - len(shown), counts)


def _incident(policy: Policy, row: Any, kind: str, view: dict[str, Any] | None, now: datetime) -> Incident:
    period = period_of(row.start, policy.tz)
    if kind == "maintenance":
        return Incident(kind, policy.name, row.start, row.end, duration((row.end - row.start).total_seconds()),
                        period, maintenance=view or {})
    length = duration((min(row.end or now, now) - row.start).total_seconds())
    api = (f"/api/v1/outages?policy={quote(policy.name, safe='')}&since={_q(row.start)}"
           f"&until={_q(row.start + timedelta(microseconds=1))}")
    return Incident(kind, policy.name, row.start, row.end, length + (" so far" if row.end is None else ""), period,
                    window_id=row.id, evidence_json=api)


def _q(moment_: datetime) -> str:
    return quote(moment_.astimezone(UTC).isoformat().replace("+00:00", "Z"), safe="")

