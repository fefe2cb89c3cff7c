"""The data each page shows, assembled from what the queries returned; no I/O here, so a page of
hundreds of services is computed (and rendered) in a worker thread without touching the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence
from urllib.parse import quote

from collector.reporting import announcement_of
from collector.rules.maintenance import check_kinds, judge_maintenance
from collector.rules.model import Announcement
from collector.rules.periods import period_of
from collector.rules.policy import Policy, PolicyError

from .format import duration, parse_iso
from .history import (
    FIGURE_PERIODS, STATES, Bar, Days, EvidenceView, Figure, ServiceState, availability_figure, compact_bars,
    current_state, daily_bars, evidence_view, period_summary, result_details, summarise_rounds, worst_bars,
)
from .directory import Presentation

__all__ = ["ServiceView", "GroupView", "Incident", "StatusPage", "build_status_page", "policy_url", "service_url",
           "outage_api_url", "INCIDENT_MONTHS", "FULL_BARS_MAX", "FRONT_ENTRIES"]

UTC = timezone.utc
INCIDENT_MONTHS = 12
# A page lists at most this many outages and maintenance entries; older ones stay in the JSON API.
MAX_INCIDENTS = 200
# The front page lists the newest few (with their evidence); /history and each service's page the rest.
FRONT_ENTRIES = 10
# Up to this many services and groups on the front page, every day has its own bar; past it, runs
# of days with nothing to say are drawn as one bar each, so that the page stays small.
FULL_BARS_MAX = 50


def policy_url(name: str, period: str | None = None) -> str:
    url = f"/policies/{quote(name, safe='')}"
    return f"{url}/{period}" if period else url


def service_url(name: str) -> str:
    """The service's own page: its components, bars, response times and history with evidence."""
    return f"/services/{quote(name, safe='')}"


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
    # availability over the last 24 h, 7 d, 30 d and 90 d (history.FIGURE_PERIODS)
    figures: list[Figure] = field(default_factory=list)
    display_name: str = ""
    group: str | None = None
    parts: list["ServiceView"] = field(default_factory=list)   # its components' own views (contracts)
    shown_bars: list[Bar] = field(default_factory=list)        # the bars as the front page draws them
    kind: str = "service"

    @property
    def page_url(self) -> str:
        return service_url(self.name)

    @property
    def title(self) -> str:
        return self.display_name or self.name


@dataclass
class GroupView:
    """Services shown together: the group's state, bars and figures are its worst member's."""
    name: str
    members: list[ServiceView]
    state: ServiceState
    bars: list[Bar]
    figures: list[Figure]
    shown_bars: list[Bar] = field(default_factory=list)
    kind: str = "group"

    @property
    def title(self) -> str:
        return self.name

    @property
    def anchor(self) -> str:
        return "group-" + quote(self.name, safe="")


def _worst_figure(label: str, figures: Sequence[Figure]) -> Figure:
    """The lowest of the members' figures (a figure without data is the lowest of all)."""
    return min(figures, key=lambda f: (f.worst is not None, f.worst if f.worst is not None else 0.0,
                                       f.best if f.best is not None else 0.0), default=Figure(label, None, None, 0, 0, 0))


def _group_view(name: str, members: list[ServiceView]) -> GroupView:
    worst = min(members, key=lambda m: STATES.index(m.state.kind))
    state = worst.state
    if len(members) > 1:
        bad = [m.title for m in members if m.state.kind == worst.state.kind]
        state = ServiceState(worst.state.kind, worst.state.text,
                             f"{', '.join(bad)}: {worst.state.detail}" if worst.state.kind != "up"
                             else f"All {len(members)} services up", worst.state.since)
    bars = worst_bars([(m.title, m.bars) for m in members])
    labels = [f.label for f in members[0].figures] if members else []
    figures = [_worst_figure(label, [m.figures[i] for m in members if i < len(m.figures)])
               for i, label in enumerate(labels)]
    return GroupView(name, members, state, bars, figures)


@dataclass
class Incident:
    kind: str                 # "outage" | "maintenance"
    policy: str
    start: datetime
    end: datetime | None
    length: str               # "10 s", "1 h 5 min", "12 min so far"
    period: str               # the month (policy's time zone) whose report holds it
    window_id: int | None = None
    components: tuple[str, ...] = ()       # the policy's checks (whose results are the evidence)
    evidence: EvidenceView | None = None   # attached once loaded (StatusPage.attach_evidence)
    evidence_json: str = ""   # the API query that returns the full evidence
    # kind, recorded_at, stated_announced, recorded_by, author, cancelled_at, cancel_reason, note,
    # compliant, broken_rules, notice
    maintenance: dict[str, Any] = field(default_factory=dict)
    title: str = ""           # the service's name for people

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
    entries: list[Any] = field(default_factory=list)   # the front page's groups and ungrouped services
    compact: bool = False                              # runs of uneventful days drawn as one bar
    views: dict[str, ServiceView] = field(default_factory=dict)  # every policy's view, components too

    def window_ids(self) -> list[int]:
        """The windows whose evidence the page shows."""
        return [i.window_id for _month, items in self.months for i in items if i.window_id is not None]

    def _outages(self):
        return [i for _month, items in self.months for i in items if i.window_id is not None]

    def result_slots(self, evidence_by_id: dict[int, Any]) -> list[tuple[str, datetime]]:
        """(check, slot) of the first and last round of each listed window's stored evidence:
        the raw results that say what the agents saw (queries.window_results)."""
        out: set[tuple[str, datetime]] = set()
        for i in self._outages():
            for slot in _edge_slots(evidence_by_id.get(i.window_id)):
                out.update((check, slot) for check in i.components)
        return sorted(out)

    def attach_evidence(self, evidence_by_id: dict[int, Any], results: Sequence[Any] = ()) -> None:
        """Each listed window's evidence, with the failing step, error and phases its agents
        reported in its first and last round where those results are still stored."""
        by_slot: dict[tuple[str, datetime], list[Any]] = {}
        for row in results:
            by_slot.setdefault((row.check, row.slot), []).append(row)
        for i in self._outages():
            stored = evidence_by_id.get(i.window_id)
            mine = [row for slot in _edge_slots(stored) for check in i.components
                    for row in by_slot.get((check, slot), ())]
            i.evidence = evidence_view(summarise_rounds(stored), result_details(mine))


def _edge_slots(evidence: Any) -> list[datetime]:
    """The first and last round's slot of a stored window's evidence (none when malformed)."""
    rounds = evidence.get("rounds") if isinstance(evidence, dict) else None
    slots = []
    for rnd in (rounds[0], rounds[-1]) if isinstance(rounds, list) and rounds else ():
        try:
            slots.append(parse_iso(rnd["slot"]))
        except (TypeError, KeyError, ValueError, AttributeError):
            continue
    return sorted(set(slots))


def _maintenance_views(policy: Policy, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Each announcement judged under its policy's contract rules (notice, window, limits)."""
    announcements = [announcement_of(r) for r in rows]
    accepted = [a for a in announcements if a.kind in policy.maintenance]
    judged: dict[int, Any] = {}
    try:
        check_kinds(policy, accepted)
        for ann, judgement in zip(accepted, judge_maintenance(policy, accepted)):
            judged[id(ann)] = judgement
    except (PolicyError, ValueError) as err:  # a rule the core refuses: say so rather than fail the page
        return [{**_record(a), "compliant": False,
                 "broken_rules": [{"rule": "policy", "detail": str(err)}]} for a in announcements]
    out = []
    for ann in announcements:
        judgement = judged.get(id(ann))
        if judgement is None:
            kinds = ", ".join(policy.maintenance) or "none"
            out.append({**_record(ann), "compliant": False,
                        "broken_rules": [{"rule": "kind", "detail": f"the contract does not accept {ann.kind!r} "
                                                                    f"maintenance (accepted: {kinds})"}]})
        else:
            out.append({**_record(ann), "compliant": judgement.compliant,
                        "broken_rules": [dict(r) for r in judgement.broken_rules], "notice": judgement.notice})
    return out


def _record(ann: Announcement) -> dict[str, Any]:
    return {"kind": ann.kind, "note": ann.note, "recorded_at": ann.recorded, "stated_announced": ann.announced,
            "recorded_by": ann.recorded_by, "author": ann.author, "cancelled_at": ann.cancelled_at,
            "cancel_reason": ann.cancel_reason}


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
    runs_by_policy: dict[str, Sequence[Any]] | None = None,
    judged_until: dict[str, datetime] | None = None,
    up_since: dict[str, datetime] | None = None,
    figure_periods: Sequence[tuple[str, timedelta]] = FIGURE_PERIODS,
    first_by_check: dict[str, datetime] | None = None,
    presentation: dict[str, Presentation] | None = None,
    history_of: set[str] | None = None,
    max_entries: int = MAX_INCIDENTS,
    with_services: bool = True,
) -> StatusPage:
    """1. Group windows and maintenance by policy (anything for a policy no longer configured is left out).
    2. Per service: current state (from the latest judged round: `runs_by_policy` holds its recent
       runs of non-UP rounds, `judged_until` how far it was judged), 90 daily bars with the time
       of rounds without a verdict hatched, availability over the judged time of the days with data.
    3. Outages and maintenance of the last 12 months, newest first, grouped by UTC month: of the
       services in `history_of` (default: those shown), at most `max_entries`.
    4. The services shown (directory.py: a contract with its checks as components; `presentation`
       None shows every policy under its own name), grouped, each group summarised by its worst
       member; past FULL_BARS_MAX entries, runs of uneventful days are drawn as one bar.
       Without `with_services` (the history page), only step 3."""
    presentation = presentation if presentation is not None else {
        name: Presentation(name, name, None, True) for name in policies}
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
    counts = {kind: 0 for kind in STATES}
    runs_by_policy = runs_by_policy or {}
    judged_until = judged_until or {}
    up_since = up_since or {}
    views: dict[str, ServiceView] = {}
    shown = {name for name in policies if presentation.get(name) is not None and presentation[name].shown}
    history_of = shown if history_of is None else history_of
    for name in sorted(policies):
        policy = policies[name]
        mine = windows_by.get(name, [])
        rows = maint_by.get(name, [])
        if not with_services:
            if name in history_of:
                _add_entries(entries, name, policy, mine, rows, since)
            continue
        open_since = next((w.start for w in mine if w.end is None), None)
        # a cancelled announcement stays listed but puts nothing under maintenance
        in_force = [m for m in rows if m.cancelled_at is None]
        active = [m for m in in_force if m.start <= now < m.end]
        runs = list(runs_by_policy.get(name, ()))
        state = current_state(
            open_since=open_since,
            maintenance_until=max((m.end for m in active), default=None),
            maintenance_since=min((m.start for m in active), default=None),
            maintenance_kind=", ".join(sorted({m.kind for m in active})) or None,
            latest_slots={c: latest_by_check.get(c) for c in policy.components},
            interval=policy.interval, grace=grace, now=now,
            judged_until=judged_until.get(name), latest_run=runs[-1] if runs else None, up_since=up_since.get(name))
        if name in shown:
            counts[state.kind] += 1
        evidence = set().union(*(evidence_by_check.get(c, set()) for c in policy.components))
        unknown = [(r.start, r.end) for r in runs if getattr(r.verdict, "value", r.verdict) == "unknown"]
        degraded = [(r.start, r.end) for r in runs if getattr(r.verdict, "value", r.verdict) == "degraded"]
        bars = daily_bars([(w.start, w.end) for w in mine], evidence, days, [(m.start, m.end) for m in in_force], unknown,
                          degraded)
        availability, missing = period_summary(bars)
        spans = [(w.start, w.end) for w in mine]
        # the figures count nothing as judged before every component had its first result
        firsts = [first_by_check.get(c) for c in policy.components] if first_by_check is not None else []
        judged_from = (None if first_by_check is None else
                       max(firsts) if firsts and all(f is not None for f in firsts) else now)
        figures = [availability_figure(label, now - length, days=days, windows=spans, evidence_days=evidence,
                                       unknown=unknown, judged_until=judged_until.get(name), judged_from=judged_from)
                   for label, length in figure_periods]
        look = presentation.get(name) or Presentation(name, name, None, False)
        view = ServiceView(name, policy.description, list(policy.components), state, bars, availability,
                           missing, policy_url(name), period_of(now, policy.tz), figures,
                           display_name=look.display_name, group=look.group)
        views[name] = view
        if name in shown:
            services.append(view)

        if name in history_of:
            _add_entries(entries, name, policy, mine, rows, since)

    for view in views.values():
        look = presentation.get(view.name)
        view.parts = [views[c] for c in (look.components if look else ()) if c in views and c != view.name]

    entries.sort(key=lambda e: (e[0], e[1], e[2]), reverse=True)
    listed = [_incident(policies[name], row, kind, judged, now, presentation)
              for _start, kind, name, row, judged in entries[:max_entries]]
    total = len(entries)
    months: list[tuple[str, list[Incident]]] = []
    for incident in listed:
        if not months or months[-1][0] != incident.month:
            months.append((incident.month, []))
        months[-1][1].append(incident)
    top = _top_level(services)
    compact = len(top) > FULL_BARS_MAX
    for item in top:
        item.shown_bars = compact_bars(item.bars, days) if compact else item.bars
    return StatusPage(now, services, months, total, total - len(listed), counts, top, compact, views)


def _add_entries(entries: list[tuple], name: str, policy: Policy, windows: Sequence[Any], rows: Sequence[Any],
                 since: datetime) -> None:
    """The service's outages and maintenance, listed (in full only the newest max_entries)."""
    entries.extend((w.start, "outage", name, w, None) for w in windows)
    for row, judged in zip(rows, _maintenance_views(policy, rows)):
        if row.end > since:
            entries.append((row.start, "maintenance", name, row, judged))


def _top_level(services: list[ServiceView]) -> list[Any]:
    """Ungrouped services and groups, by the name people read; a group's members likewise."""
    groups: dict[str, list[ServiceView]] = {}
    top: list[Any] = []
    for view in services:
        if view.group:
            if view.group not in groups:
                groups[view.group] = []
                top.append(view.group)
            groups[view.group].append(view)
        else:
            top.append(view)
    items = [_group_view(item, sorted(groups[item], key=lambda m: (m.title.casefold(), m.name)))
             if isinstance(item, str) else item for item in top]
    return sorted(items, key=lambda i: (i.title.casefold(), i.kind))


def _incident(policy: Policy, row: Any, kind: str, view: dict[str, Any] | None, now: datetime,
              presentation: dict[str, Presentation] | None = None) -> Incident:
    period = period_of(row.start, policy.tz)
    look = (presentation or {}).get(policy.name)
    title = look.display_name if look else policy.name
    if kind == "maintenance":
        return Incident(kind, policy.name, row.start, row.end, duration((row.end - row.start).total_seconds()),
                        period, maintenance=view or {}, title=title)
    length = duration((min(row.end or now, now) - row.start).total_seconds())
    api = outage_api_url(policy.name, row.start)
    return Incident(kind, policy.name, row.start, row.end, length + (" so far" if row.end is None else ""), period,
                    window_id=row.id, components=tuple(policy.components), evidence_json=api, title=title)


def outage_api_url(policy: str, start: datetime) -> str:
    """The API query that returns the window starting at `start`, with its full evidence."""
    return (f"/api/v1/outages?policy={quote(policy, safe='')}&since={_q(start)}"
            f"&until={_q(start + timedelta(microseconds=1))}")


def _q(moment_: datetime) -> str:
    return quote(moment_.astimezone(UTC).isoformat().replace("+00:00", "Z"), safe="")

