"""HTML routes: the status page at `/` and the SLA report pages under `/policies/` (issue 6, item 1).

Pages are rendered on the server with Jinja2 and work without JavaScript. A visitor's mistake (a
month that does not parse, a policy that does not exist) gets a page that names it, with a 4xx
status; a database that does not answer gets a 503 page; neither is ever a 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

from collector import store
from collector.api.common import STATE
from collector.config import admin_token_matches
from collector.incidents import list_incidents
from collector.rules.offline import InputError
from collector.rules.periods import next_period, parse_period, period_of, previous_period
from collector.rules.policy import Policy, PolicyError
from collector.reporting import report_from_db

from . import format as fmt
from . import queries
from .chart import chart_hours, hourly_medians, latency_svg
from .badges import availability_badge, state_badge
from .feed import FEED_DAYS, build_feed, feed_events
from .incidents import UPDATE_EVERY, incidents_page_data, open_incidents
from .history import DAYS_SHOWN, FIGURE_PERIODS, LEVELS, Days, evidence_view
from .cache import Kept, PageCache
from .directory import Presentation, directory
from .pages import FRONT_ENTRIES, INCIDENT_MONTHS, MAX_INCIDENTS, build_status_page, policy_url, service_url

__all__ = ["setup_status_routes"]

log = logging.getLogger("uptime.collector.status")

UTC = timezone.utc
_PERIOD = re.compile(r"^\d{4}-\d{2}$")
# The first month a report can describe: slots count from the Unix epoch.
FIRST_PERIOD = "1970-01"
_DB_ERRORS = (OperationalError, DBAPIError, ConnectionError, OSError)

CREDIT_NAMES = {
    "none": "no service credit",
    "tiered_percent": "percentage of the month's fees by availability band",
    "half_day_per_started_hour": "days of fees per started hour of downtime",
    "day_per_outage_day": "one day of fees per local day with an outage",
    "per_outage_increment": "percentage of the monthly fee per complete increment of each outage",
    "pro_rata": "pro-rata rebate of the fees for the downtime",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("collector.status", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        percent=fmt.percent, minutes=fmt.minutes, duration=fmt.duration, moment=fmt.moment,
        iso=fmt.iso_utc, month_name=fmt.month_name, policy_url=policy_url, service_url=service_url,
    )
    env.globals.update(LEVELS=LEVELS, DAYS_SHOWN=DAYS_SHOWN, CREDIT_NAMES=CREDIT_NAMES,
                       INCIDENT_MONTHS=INCIDENT_MONTHS, evidence_view=evidence_view,
                       FIGURE_PERIODS=FIGURE_PERIODS, FEED_DAYS=FEED_DAYS)
    return env


ENV = _environment()


def _state(request: web.Request):
    return request.app[STATE]


async def _render(name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> web.Response:
    # A page for hundreds of services takes a while to render: keep it off the event loop.
    html = await asyncio.to_thread(ENV.get_template(name).render, **context)
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache", **(headers or {})})
    response.enable_compression()
    return response


async def _error(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return await _render("error.html", status=status, headers=headers, title=title, message=message)


def _private(request: web.Request) -> bool:
    """True when reads are not public and the request does not carry the admin token."""
    config = _state(request).config
    if config.public_reads:
        return False
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = config.admin_token
    return not admin_token_matches(token.strip() if scheme.lower() == "bearer" else "", expected)


# How far ahead a recurring series' occurrences are shown as upcoming maintenance.
UPCOMING = timedelta(days=7)


def presentation_of(state: Any) -> dict[str, Presentation]:
    """Which services the page shows, under which names and groups (directory.py)."""
    contracts = (state.contract_entries.values() if state.checks_version is not None else state.config.policies)
    return directory(state.policies, state.checks, contracts)


async def _page_data(state: Any, now: datetime, days: Days, policies: dict[str, Policy] | None = None,
                     figure_periods: Any = FIGURE_PERIODS, *, history_of: set[str] | None = None,
                     max_entries: int = MAX_INCIDENTS, with_services: bool = True) -> Any:
    """Everything the front page and GET /api/v1/status show, loaded in a handful of queries
    (not a few per service) and assembled off the event loop. `policies` narrows it to some
    services (a badge needs one, a service's page it and its components)."""
    presentation = presentation_of(state)
    if policies is not None:
        # a service asked for by name is shown, whatever the front page does with it
        presentation = {**presentation, **{n: Presentation(n, presentation[n].display_name if n in presentation else n,
                                                           None, True, presentation[n].components if n in presentation else ())
                                           for n in (history_of or policies)}}
    policies = state.policies if policies is None else policies
    checks = sorted({c for p in policies.values() for c in p.components})
    names = sorted(policies)
    since = now - timedelta(days=365)
    longest = max((p.interval for p in policies.values()), default=60.0)
    recent = now - timedelta(seconds=4 * longest + state.config.evaluation.grace)
    async with state.sessionmaker() as session:
        windows = await queries.windows_since(session, min(since, days.starts[0]))
        # a month more of maintenance: monthly budgets count the announcements before `since`
        maintenance = await queries.maintenance_since(session, since - timedelta(days=31))
        # recurring series: their occurrences up to a week ahead (the page lists what is upcoming)
        maintenance += await queries.series_occurrences(session, since - timedelta(days=31), now + UPCOMING)
        evidence, first_slots, latest, runs, judged, up_since = {}, {}, {}, {}, {}, {}
        if with_services:  # the history page lists outages and maintenance only
            evidence, first_slots = await queries.evidence_and_first_slots(session, checks, days.starts)
            latest = await queries.latest_slots(session, checks, recent)
            runs = await store.runs_since(session, names, days.starts[0])
            judged = await store.judged_until(session, names)
            up_since = await store.last_run_ends(session, names)
    return await asyncio.to_thread(
        build_status_page, now=now, policies=policies, windows=windows, maintenance=maintenance,
        evidence_by_check=evidence, latest_by_check=latest, days=days, grace=state.config.evaluation.grace,
        runs_by_policy=runs, judged_until=judged, up_since=up_since, figure_periods=figure_periods,
        first_by_check=first_slots, presentation=presentation, history_of=history_of, max_entries=max_entries,
        with_services=with_services)


# The page reloads itself this often (seconds) unless ?refresh=0; between REFRESH_MIN and
# REFRESH_MAX otherwise, so a link cannot make every visitor's browser hammer the collector.
REFRESH_DEFAULT, REFRESH_MIN, REFRESH_MAX = 60, 10, 86400
FEED_HEADER = '</feed.atom>; rel="alternate"; type="application/atom+xml"; title="Verified outages and maintenance"'


def _refresh(request: web.Request) -> int:
    raw = request.query.get("refresh")
    if raw is None:
        return REFRESH_DEFAULT
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if re.fullmatch(r"[0-9]{1,6}", raw.strip()):
        value = int(raw)
        if value == 0 or REFRESH_MIN <= value <= REFRESH_MAX:
            return value
    raise ValueError(f"The parameter refresh={raw!r} must be 0 (no automatic reload) or a number of seconds "
                     f"from {REFRESH_MIN} to {REFRESH_MAX}.")


async def _guarded(request: web.Request) -> web.Response | int:
    """The refresh interval asked for, or the page that says why the request is refused."""
    if _private(request):
        return await _error(401, "Private status page",
                            "This collector's pages need the admin token (public_reads is off).",
                            {"WWW-Authenticate": "Bearer"})
    try:
        return _refresh(request)
    except ValueError as err:
        return await _error(400, "Bad refresh parameter", str(err))


async def _with_evidence(request: web.Request, template: str, refresh: int, policies: dict[str, Policy] | None = None,
                         **options: Any) -> web.Response:
    """A page of services and their listed outages, with each outage's stored evidence."""
    state = _state(request)
    now = datetime.now(UTC)
    days = Days.ending(now, DAYS_SHOWN)
    try:
        page = await _page_data(state, now, days, policies, **options)
    except _DB_ERRORS as err:
        log.warning("status page: database unavailable: %s", err.__class__.__name__)
        return await _error(503, "Status temporarily unavailable",
                            "The collector's database does not answer; try again in a few seconds.",
                            {"Retry-After": "5"})
    stored: dict = {}
    results: list = []
    extra: dict[str, Any] = {}
    try:
        async with state.sessionmaker() as session:
            stored = await queries.window_evidence(session, page.window_ids())
            # what the agents saw in each window's first and last round (error, failing step, phases)
            results = await queries.window_results(session, page.result_slots(stored))
            if template == "index.html":
                extra["open_incidents"] = await open_incidents(session, now, state.policies)
            if template == "service.html":
                name = next(iter(options["history_of"]))
                hours = chart_hours(now)
                medians = await hourly_medians(session, list(state.policies[name].components), hours[0], now)
                extra["latency_chart"] = latency_svg(name, medians, hours)
                extra["service"] = page.views[name]
    except _DB_ERRORS as err:
        # the page without evidence beats no page: each entry says none is stored
        log.warning("status page: database unavailable: %s", err.__class__.__name__)
    extra.setdefault("latency_chart", "")
    extra.setdefault("open_incidents", [])
    if template == "service.html":
        extra.setdefault("service", page.views[next(iter(options["history_of"]))])
    page.attach_evidence(stored, results)
    # feed readers find the feed in the Link header (RFC 8288) and in the page's rel="alternate" link
    response = await _render(template, page=page, refresh=refresh, headers={"Link": FEED_HEADER}, **extra)
    response[_LARGE] = page.compact
    return response


_LARGE = web.ResponseKey("status_large_page", bool)  # a page of many services (cache.py keeps it)
PAGE_CACHE = web.AppKey("status_page_cache", PageCache)


async def status_page(request: web.Request) -> web.Response:
    """`GET /`: every service (or group) with its state, 90 daily bars and figures, and the newest
    outages and maintenance; the rest of 12 months is at /history."""
    refresh = await _guarded(request)
    if isinstance(refresh, web.Response):
        return refresh

    async def compute() -> Kept:
        response = await _with_evidence(request, "index.html", refresh, max_entries=FRONT_ENTRIES)
        return Kept(response.body, dict(response.headers), response.status, time.monotonic(),
                    keep=response.status == 200 and bool(response.get(_LARGE)))

    kept = await request.app[PAGE_CACHE].get(("/", refresh), compute)
    if kept is None:
        return await _error(503, "Status temporarily unavailable", "The page could not be computed; try again.",
                            {"Retry-After": "5"})
    headers = {k: v for k, v in kept.headers.items() if k.lower() not in ("content-length", "content-type",
                                                                          "content-encoding", "transfer-encoding")}
    response = web.Response(body=kept.body, status=kept.status, content_type="text/html", charset="utf-8",
                            headers=headers)
    response.enable_compression()
    return response


async def history_page(request: web.Request) -> web.Response:
    """`GET /history`: the verified outages and maintenance of 12 months, with their evidence."""
    refresh = await _guarded(request)
    if isinstance(refresh, web.Response):
        return refresh
    return await _with_evidence(request, "history.html", refresh, with_services=False)


async def service_page(request: web.Request) -> web.Response:
    """`GET /services/{name}`: one service: its components, bars, figures, response times, and its
    outages and maintenance of 12 months with their evidence."""
    refresh = await _guarded(request)
    if isinstance(refresh, web.Response):
        return refresh
    state = _state(request)
    name = request.match_info["name"]
    policy = state.policies.get(name)
    if policy is None:
        return await _error(404, "Unknown service", f"There is no service named {name!r} on this collector.")
    mine = {name: policy, **{c: state.policies[c] for c in policy.components if c in state.policies}}
    return await _with_evidence(request, "service.html", refresh, mine, history_of={name})


async def status_api(request: web.Request) -> web.Response:
    """`GET /api/v1/status`: every service on the status page with its current state and since
    when: up, degraded, failing, outage, maintenance or unknown (never up without a judged round)."""
    if _private(request):
        return web.json_response({"error": "admin token required (public_reads is off)"}, status=401)
    state = _state(request)
    now = datetime.now(UTC)
    try:
        page = await _page_data(state, now, Days.ending(now, 1), figure_periods=())
    except _DB_ERRORS as err:
        log.warning("status API: database unavailable: %s", err.__class__.__name__)
        return web.json_response({"error": "database unavailable, retry later"}, status=503,
                                 headers={"Retry-After": "5"})
    services = [{"name": s.name, "display_name": s.title, "group": s.group, "state": s.state.kind,
                 "since": fmt.iso_utc(s.state.since) if s.state.since else None,
                 "text": s.state.text, "detail": s.state.detail, "components": s.components, "url": s.url,
                 "page": s.page_url,
                 "component_states": [{"name": p.name, "display_name": p.title, "state": p.state.kind,
                                       "since": fmt.iso_utc(p.state.since) if p.state.since else None}
                                      for p in s.parts]}
                for s in page.services]
    return web.json_response({"generated_at": fmt.iso_utc(now),
                              "all_up": bool(services) and all(s["state"] == "up" for s in services),
                              "counts": page.counts, "services": services})


def _check_period(period: str, policy: Policy, now: datetime) -> str | None:
    """What is wrong with a requested month, in words; None when it can be reported."""
    current = period_of(now, policy.tz)
    if not _PERIOD.match(period or ""):
        return f"The month {period!r} is not a month written YYYY-MM (for example {current})."
    try:
        parse_period(period)
    except ValueError:
        return f"The month {period!r} does not exist: the month must be between 01 and 12."
    if period < FIRST_PERIOD:
        return f"The month {period} is before {FIRST_PERIOD}; there can be no results that old."
    if period > current:
        return f"The month {period} has not begun yet; the latest report is for {current}."
    return None


async def policy_report(request: web.Request) -> web.StreamResponse:
    """`GET /policies/{name}[/{YYYY-MM}]`: the month's SLA report for a person.

    Without a month it shows the current month in the policy's time zone; the month picker's
    `?period=` is redirected to the month's own address.
    """
    if _private(request):
        return await _error(401, "Private report", "This collector's pages need the admin token (public_reads is off).",
                            {"WWW-Authenticate": "Bearer"})
    state = _state(request)
    name = request.match_info["name"]
    policy = state.policies.get(name)
    if policy is None:
        return await _error(404, "Unknown service", f"There is no policy named {name!r} on this collector.")
    now = datetime.now(UTC)
    period = request.match_info.get("period")
    if period is None:
        asked = request.query.get("period")
        if asked is None:
            period = period_of(now, policy.tz)
        elif _check_period(asked, policy, now) is None:
            raise web.HTTPFound(policy_url(name, asked))
        else:
            period = asked
    problem = _check_period(period, policy, now)
    if problem is not None:
        return await _error(400, "Not a month that can be reported", problem)

    # the agents each component expects, as the live evaluator and the JSON report use them
    expected = {c: state.config.agents_of(state.checks[c]) for c in policy.components if c in state.checks}
    try:
        async with state.sessionmaker() as session:
            report = await report_from_db(session, policy, period, now=now, expected_by_component=expected)
            # the last 24 hours whatever month is shown: the chart is about now, the report about the month
            hours = chart_hours(now)
            medians = await hourly_medians(session, list(policy.components), hours[0], now)
    except (PolicyError, InputError) as err:
        return await _error(400, "This report cannot be computed", str(err))
    except _DB_ERRORS as err:
        log.warning("report page: database unavailable: %s", err.__class__.__name__)
        return await _error(503, "Report temporarily unavailable",
                            "The collector's database does not answer; try again in a few seconds.",
                            {"Retry-After": "5"})
    current = period_of(now, policy.tz)
    return await _render(
        "report.html", report=report, policy=policy, now=now, tz=policy.timezone,
        previous_month=previous_period(period) if previous_period(period) >= FIRST_PERIOD else None,
        next_month=next_period(period) if next_period(period) <= current else None,
        current=current, latency_chart=latency_svg(name, medians, hours),
    )


async def incidents_page(request: web.Request) -> web.Response:
    """`GET /incidents`: open incidents, then those of the last 12 months, with updates and links."""
    refresh = await _guarded(request)
    if isinstance(refresh, web.Response):
        return refresh
    state = _state(request)
    now = datetime.now(UTC)
    try:
        async with state.sessionmaker() as session:
            page = await incidents_page_data(session, now, state.policies)
    except _DB_ERRORS as err:
        log.warning("incidents page: database unavailable: %s", err.__class__.__name__)
        return await _error(503, "Incidents temporarily unavailable",
                            "The collector's database does not answer; try again in a few seconds.",
                            {"Retry-After": "5"})
    return await _render("incidents.html", page=page, refresh=refresh, headers={"Link": FEED_HEADER},
                         update_every=fmt.duration(UPDATE_EVERY.total_seconds()))


def _base_url(request: web.Request) -> str:
    """Where the collector is reached: its configured public_url, else the request's own origin."""
    configured = _state(request).config.public_url
    return configured.rstrip("/") if configured else str(request.url.origin())


async def status_feed(request: web.Request) -> web.Response:
    """`GET /feed.atom`: verified outages opened and closed, maintenance announced and cancelled,
    of the last FEED_DAYS days, newest first (feed.py)."""
    if _private(request):
        return web.Response(status=401, text="admin token required (public_reads is off)\n",
                            headers={"WWW-Authenticate": "Bearer"})
    state = _state(request)
    now = datetime.now(UTC)
    since = now - timedelta(days=FEED_DAYS)
    try:
        async with state.sessionmaker() as session:
            windows = await queries.windows_since(session, since)
            # an announcement's maintenance may end before the period although it was recorded
            # (or cancelled) inside it: its events are filtered by when they happened
            maintenance = await queries.maintenance_since(session, since - timedelta(days=365))
            incidents = await list_incidents(session, since=since)
            series = await store.list_maintenance_series(session)
    except _DB_ERRORS as err:
        log.warning("status feed: database unavailable: %s", err.__class__.__name__)
        return web.Response(status=503, text="database unavailable, retry later\n", headers={"Retry-After": "5"})
    events = feed_events(now=now, policies=state.policies, windows=windows, maintenance=maintenance, series=series,
                         incidents=incidents)
    body = await asyncio.to_thread(build_feed, events, base_url=_base_url(request), now=now)
    response = web.Response(body=body, content_type="application/atom+xml", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})
    response.enable_compression()
    return response


def _svg(text: str, status: int = 200) -> web.Response:
    # a badge is embedded in other sites' pages: short-lived, and never a script context
    return web.Response(text=text, status=status, content_type="image/svg+xml", charset="utf-8",
                        headers={"Cache-Control": "no-cache, max-age=0",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                                 "X-Content-Type-Options": "nosniff"})


async def _badge_page(request: web.Request, days: Days, figure_periods: Any = ()) -> tuple[Policy, Any] | web.Response:
    """The service's page data, or the response that says why there is none."""
    if _private(request):
        return web.json_response({"error": "admin token required (public_reads is off)"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    state = _state(request)
    name = request.match_info["service"]
    policy = state.policies.get(name)
    if policy is None:
        return web.json_response({"error": f"unknown service {name!r}", "parameter": "service"}, status=404)
    try:
        page = await _page_data(state, days.now, days, {name: policy}, figure_periods)
    except _DB_ERRORS as err:
        log.warning("badge: database unavailable: %s", err.__class__.__name__)
        return web.json_response({"error": "database unavailable, retry later"}, status=503,
                                 headers={"Retry-After": "5"})
    return policy, page.services[0]


async def state_badge_svg(request: web.Request) -> web.Response:
    """`GET /badge/{service}.svg`: the service's current state, as GET /api/v1/status says it."""
    now = datetime.now(UTC)
    found = await _badge_page(request, Days.ending(now, 1))
    if isinstance(found, web.Response):
        return found
    policy, service = found
    return _svg(state_badge(policy.name, service.state.kind))


BADGE_DAYS_MAX = 90


async def availability_badge_svg(request: web.Request) -> web.Response:
    """`GET /badge/{service}/availability.svg?days=30`: availability over the last `days` days
    (1 to 90), computed as the page's figures are (history.availability_figure)."""
    raw = request.query.get("days", "30")
    stripped = raw.strip()
    if not (re.fullmatch(r"[0-9]{1,3}", stripped) and 1 <= int(stripped) <= BADGE_DAYS_MAX):
        return web.json_response({"error": f"days must be a whole number of days from 1 to {BADGE_DAYS_MAX}, "
                                           f"not {raw[:40]!r}", "parameter": "days"}, status=400)
    count = int(stripped)
    now = datetime.now(UTC)
    # one UTC day more than asked, so that the period [now - days, now) lies inside the days whose
    # evidence is read; 90 is the page's own 90 days shown, so the badge and the page agree
    days = Days.ending(now, min(count + 1, DAYS_SHOWN))
    found = await _badge_page(request, days, [(f"{count} d", timedelta(days=count))])
    if isinstance(found, web.Response):
        return found
    policy, service = found
    figure = service.figures[0]
    return _svg(availability_badge(policy.name, count, figure))


def setup_status_routes(app: web.Application) -> None:
    app[PAGE_CACHE] = PageCache()
    app.router.add_get("/feed.atom", status_feed)
    app.router.add_get("/badge/{service}/availability.svg", availability_badge_svg)
    app.router.add_get("/badge/{service}.svg", state_badge_svg)
    app.router.add_get("/", status_page)
    app.router.add_get("/history", history_page)
    app.router.add_get("/incidents", incidents_page)
    app.router.add_get("/services/{name}", service_page)
    app.router.add_get("/api/v1/status", status_api)
    app.router.add_get("/policies/{name}", policy_report)
    app.router.add_get("/policies/{name}/{period}", policy_report)
