"""The status page's Atom feed (`GET /feed.atom`): what a feed reader or a chat integration
follows instead of the page.

One entry per event of the last FEED_DAYS days, newest first: a verified outage window opened,
a window closed, maintenance announced, an announcement cancelled, an incident opened, each
update posted on it, and its resolution. Only verified windows are
outages here (a failing round that has not lasted long enough is not news yet), and each entry
links to its evidence: the month's SLA report and, for an outage, the window in /api/v1/outages.
Built from plain rows with no I/O; times are UTC (RFC 3339).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from feedgen.feed import FeedGenerator
from lxml import etree

from collector.rules.periods import period_of
from collector.rules.policy import Policy

from .format import duration, moment
from .pages import outage_api_url, policy_url

__all__ = ["FEED_DAYS", "FeedEvent", "feed_events", "incident_events", "build_feed"]

UTC = timezone.utc
FEED_DAYS = 90
# A feed reader reads the newest entries; an old outage stays on the page and in the API.
MAX_ENTRIES = 500


@dataclass(frozen=True)
class FeedEvent:
    at: datetime
    kind: str            # "outage-opened" | "outage-closed" | "maintenance-announced" | "maintenance-cancelled"
                         # | "incident-opened" | "incident-updated" | "incident-resolved"
    policy: str
    key: str             # stable within the collector: the entry's id
    title: str
    summary: str
    report: str          # the month's SLA report (path)
    evidence: str = ""   # the window in the outages API (path), for outages
    report_title: str = "SLA report"   # what `report` is (an incident's entry links to its incident)


def feed_events(*, now: datetime, policies: dict[str, Policy], windows: Iterable[Any],
                maintenance: Iterable[Any], incidents: Iterable[Any] = (), series: Iterable[Any] = ()) -> list[FeedEvent]:
    """The events of the last FEED_DAYS days for the configured policies, newest first.
    `incidents`: collector.incidents.IncidentRecord, with their updates; `series`: recurring
    maintenance series with their cancelled occurrences (store.list_maintenance_series)."""
    since = now - timedelta(days=FEED_DAYS)
    events: list[FeedEvent] = []
    for w in windows:
        policy = policies.get(w.policy)
        if policy is None:
            continue
        report = policy_url(policy.name, period_of(w.start, policy.tz))
        api = outage_api_url(policy.name, w.start)
        if since <= w.start <= now:
            events.append(FeedEvent(
                w.start, "outage-opened", policy.name, f"outage-{w.id}-opened",
                f"Verified outage: {policy.name}",
                f"A verified outage of {policy.name} began at {moment(w.start)}"
                + (" and is still in progress." if w.end is None else
                   f"; it ended at {moment(w.end)} after {duration((w.end - w.start).total_seconds())}."),
                report, api))
        if w.end is not None and since <= w.end <= now:
            events.append(FeedEvent(
                w.end, "outage-closed", policy.name, f"outage-{w.id}-closed",
                f"Resolved: {policy.name} is no longer in a verified outage",
                f"The verified outage of {policy.name} that began at {moment(w.start)} ended at {moment(w.end)} "
                f"after {duration((w.end - w.start).total_seconds())}.",
                report, api))
    for m in maintenance:
        policy = policies.get(m.policy)
        if policy is None:
            continue
        report = policy_url(policy.name, period_of(m.start, policy.tz))
        what = f"{(m.kind or 'announced').capitalize()} maintenance of {policy.name}"
        span = f"from {moment(m.start)} to {moment(m.end)}"
        note = f" Note: {m.note}" if m.note else ""
        if since <= m.recorded_at <= now:
            events.append(FeedEvent(
                m.recorded_at, "maintenance-announced", policy.name, f"maintenance-{m.id}-announced",
                f"{what} announced", f"{what} {span}, recorded at {moment(m.recorded_at)}.{note}", report))
        if m.cancelled_at is not None and since <= m.cancelled_at <= now:
            reason = f": {m.cancel_reason}" if m.cancel_reason else ""
            events.append(FeedEvent(
                m.cancelled_at, "maintenance-cancelled", policy.name, f"maintenance-{m.id}-cancelled",
                f"{what} cancelled", f"{what} {span} was cancelled at {moment(m.cancelled_at)}{reason}.{note}", report))
    events.extend(incident_events(incidents, since, now))
    events.extend(series_events(series, policies, since, now))
    events.sort(key=lambda e: (e.at, e.key), reverse=True)
    return events[:MAX_ENTRIES]


def series_events(series: Iterable[Any], policies: dict[str, Policy], since: datetime, now: datetime) -> list[FeedEvent]:
    """A recurring series recorded, cancelled as a whole, and each occurrence cancelled."""
    out = []
    for row, cancelled in series:
        policy = policies.get(row.policy)
        if policy is None:
            continue
        report = policy_url(policy.name, period_of(row.start, policy.tz))
        what = f"Recurring {(row.kind or 'announced')} maintenance of {policy.name}"
        rule = (f"{row.rrule}, {duration(row.duration_seconds)} each, from {moment(row.start)}"
                f"{'' if row.timezone in (None, 'UTC') else f' ({row.timezone} local time)'}")
        note = f" Note: {row.note}" if row.note else ""
        if since <= row.recorded_at <= now:
            out.append(FeedEvent(row.recorded_at, "maintenance-announced", policy.name,
                                 f"maintenance-series-{row.id}-announced", f"{what} announced",
                                 f"{what}: {rule}; recorded at {moment(row.recorded_at)}.{note}", report))
        if row.cancelled_at is not None and since <= row.cancelled_at <= now:
            reason = f": {row.cancel_reason}" if row.cancel_reason else ""
            out.append(FeedEvent(row.cancelled_at, "maintenance-cancelled", policy.name,
                                 f"maintenance-series-{row.id}-cancelled", f"{what} cancelled",
                                 f"{what} ({rule}) was cancelled at {moment(row.cancelled_at)}{reason}.", report))
        for c in cancelled:
            if since <= c.cancelled_at <= now:
                reason = f": {c.cancel_reason}" if c.cancel_reason else ""
                out.append(FeedEvent(
                    c.cancelled_at, "maintenance-cancelled", policy.name,
                    f"maintenance-series-{row.id}-occurrence-{c.start.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-cancelled",
                    f"{what}: one occurrence cancelled",
                    f"The occurrence starting {moment(c.start)} was cancelled at {moment(c.cancelled_at)}{reason}.",
                    policy_url(policy.name, period_of(c.start, policy.tz))))
    return out


def incident_events(incidents: Iterable[Any], since: datetime, now: datetime) -> list[FeedEvent]:
    """An entry when an incident was opened (with its first update), one per later update, and
    one when it was resolved (the "resolved" update), each at the collector's time of the update."""
    events: list[FeedEvent] = []
    for rec in incidents:
        i = rec.incident
        affected = ", ".join(i.policies)
        page = f"/incidents#incident-{i.id}"
        for n, u in enumerate(rec.updates):
            if not since <= u.recorded_at <= now:
                continue
            said = f" {u.status.capitalize()}: {u.message}"
            if n == 0:
                kind, key, title = "incident-opened", f"incident-{i.id}-opened", f"Incident: {i.title}"
                over = ", recorded as already resolved" if u.status == "resolved" else ""
                summary = f"Incident opened at {moment(u.recorded_at)} ({i.impact} impact on {affected}){over}.{said}"
            elif u.status == "resolved":
                kind, key, title = "incident-resolved", f"incident-{i.id}-resolved", f"Resolved: {i.title}"
                summary = (f"The incident affecting {affected} opened at {moment(i.created_at)} was resolved at "
                           f"{moment(u.recorded_at)} after {duration((u.recorded_at - i.created_at).total_seconds())}."
                           f"{said}")
            else:
                kind, key, title = "incident-updated", f"incident-{i.id}-update-{u.id}", f"Update: {i.title}"
                summary = f"Update at {moment(u.recorded_at)} on the incident affecting {affected}.{said}"
            events.append(FeedEvent(u.recorded_at, kind, affected, key, title, summary, page, report_title="Incident"))
    return events


def build_feed(events: list[FeedEvent], *, base_url: str, now: datetime) -> bytes:
    """The Atom document. `base_url` ("https://status.example") makes the links absolute."""
    base = base_url.rstrip("/")
    fg = FeedGenerator()
    fg.id(f"{base}/feed.atom")
    fg.title("Service status: verified outages, maintenance and incidents")
    fg.subtitle(f"Verified outages (opened and closed), maintenance announcements and incidents (opened, "
                f"updated, resolved) of the last {FEED_DAYS} days")
    fg.link(href=f"{base}/feed.atom", rel="self", type="application/atom+xml")
    fg.link(href=f"{base}/", rel="alternate", type="text/html")
    fg.author({"name": "uptime-verifier collector"})
    fg.language("en")
    # the feed changed when its newest event happened; without any, it is as of now
    fg.updated((events[0].at if events else now).astimezone(UTC))
    # feedgen puts the entry added last first: add the oldest first
    attributes: dict[str, dict[str, dict[str, str]]] = {}
    for event in reversed(events):
        entry = fg.add_entry()
        entry.id(f"{base}/feed.atom#{event.key}")
        entry.title(event.title)
        entry.updated(event.at.astimezone(UTC))
        entry.published(event.at.astimezone(UTC))
        entry.summary(event.summary)
        entry.category(term=event.kind)
        # the month's report for a person first (what a reader opens), then the window's evidence
        links = {f"{base}{event.report}": {"rel": "alternate", "type": "text/html", "title": event.report_title}}
        if event.evidence:
            links[f"{base}{event.evidence}"] = {"rel": "alternate", "type": "application/json",
                                                "title": "The window and its evidence (JSON)"}
        for href, attrs in links.items():
            entry.link(href=href, **attrs)
        attributes[f"{base}/feed.atom#{event.key}"] = links
    return _with_link_attributes(fg.atom_str(pretty=True), attributes)


def _with_link_attributes(document: bytes, attributes: dict[str, dict[str, dict[str, str]]]) -> bytes:
    """feedgen 1.0 writes an entry's links with their href only (it reads rel, type and title
    from the element it has just created): put them back, or two links of an entry would both
    be the default rel=alternate with no type, which Atom forbids."""
    root = etree.fromstring(document)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    for entry in root.iterfind("a:entry", ns):
        links = attributes.get(entry.findtext("a:id", namespaces=ns) or "", {})
        for link in entry.iterfind("a:link", ns):
            for name, value in links.get(link.get("href") or "", {}).items():
                link.set(name, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
