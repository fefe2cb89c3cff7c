"""The status page's Atom feed, its SVG badges, the 24 h / 7 d / 30 d / 90 d figures beside the
bars, auto-refresh and dark mode.

The HTTP checks share one collector (per database) holding test_status_page's history (a closed outage of `web`
three days ago, `db` down now, `api` never reporting, maintenance on `vision`) plus one cancelled
announcement; the arithmetic of the figures is checked on plain values.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest

from collector.db import Maintenance
from collector.status.badges import availability_badge, svg_badge
from collector.status.history import Days, availability_figure
from test_status_page import collector_app, history, make_state, text_of

UTC = timezone.utc
ATOM = "{http://www.w3.org/2005/Atom}"
H = timedelta(hours=1)
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


@pytest.fixture
async def collector(database_url, aiohttp_client):
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    http.state = state
    http.history = await history(http, state)
    now = http.history.now
    async with state.sessionmaker() as session:
        session.add(Maintenance(policy="gpu", kind="scheduled", recorded_at=now - 2 * H, start=now + 24 * H,
                                end=now + 26 * H, note="rack <move> & swap", recorded_by="api",
                                cancelled_at=now - H, cancelled_by="api", cancel_reason="postponed"))
        await session.commit()
    return http


def _svg(body: str) -> ET.Element:
    root = ET.fromstring(body)  # well-formed, whatever the names held
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _fills(body: str) -> list[str]:
    return re.findall(r'<rect x="\d+" width="\d+" height="20" fill="([^"]+)"', body)


async def feed_lists_verified_outages_and_maintenance_newest_first_with_evidence(collector) -> None:
    resp = await collector.get("/feed.atom")
    assert resp.status == 200
    assert resp.content_type == "application/atom+xml"
    root = ET.fromstring(await resp.read())
    entries = root.findall(f"{ATOM}entry")
    kinds = [(e.find(f"{ATOM}category").get("term"), e.find(f"{ATOM}title").text) for e in entries]
    updated = [e.find(f"{ATOM}updated").text for e in entries]
    assert all(RFC3339_UTC.match(u) for u in updated), updated
    assert updated == sorted(updated, reverse=True)
    terms = [k for k, _title in kinds]
    # db's window is open: opened, never closed; web's closed three days ago
    assert ("outage-opened", "Verified outage: db") in kinds
    assert ("outage-opened", "Verified outage: web") in kinds and ("outage-closed", "Resolved: web is no longer in a verified outage") in kinds
    assert not any(k == "outage-closed" and "db" in t for k, t in kinds)
    assert terms.count("maintenance-announced") == 3 and terms.count("maintenance-cancelled") == 1
    cancelled = next(e for e in entries if e.find(f"{ATOM}category").get("term") == "maintenance-cancelled")
    assert "postponed" in cancelled.find(f"{ATOM}summary").text
    assert "rack <move> & swap" in cancelled.find(f"{ATOM}summary").text  # escaped in XML, read back whole
    # every entry links to its evidence: the month's report, and for an outage the window in the API
    web_open = next(e for e in entries if e.find(f"{ATOM}title").text == "Verified outage: web")
    links = {link.get("type"): link.get("href") for link in web_open.findall(f"{ATOM}link")}
    assert "/policies/web/" in links["text/html"]
    api = links["application/json"]
    start = collector.history.outage_start.isoformat().replace("+00:00", "Z")
    body = await (await collector.get(api[api.index("/api/"):])).json()
    assert [w["start"] for w in body["outages"]] == [start], body
    page = await (await collector.get(links["text/html"][links["text/html"].index("/policies/"):])).text()
    assert "web" in page


async def state_badges_follow_the_status_api_and_unknown_is_grey(collector) -> None:
    status = {s["name"]: s["state"] for s in (await (await collector.get("/api/v1/status")).json())["services"]}
    colours = {"up": "#4c1", "outage": "#e05d44", "maintenance": "#007ec6", "unknown": "#9f9f9f"}
    for name in ("web", "db", "vision", "api"):
        resp = await collector.get(f"/badge/{name}.svg")
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        body = await resp.text()
        root = _svg(body)
        assert root.get("aria-label") == f"{name}: {status[name]}"
        assert _fills(body) == [colours[status[name]]], (name, body)
    assert status["api"] == "unknown" and status["db"] == "outage"
    missing = await collector.get("/badge/nope.svg")
    assert missing.status == 404 and "service" in (await missing.json())["parameter"]
    assert (await collector.get("/badge/nope/availability.svg")).status == 404


async def availability_badge_never_shows_unknown_as_up_and_checks_days(collector) -> None:
    api = await (await collector.get("/badge/api/availability.svg", params={"days": "30"})).text()
    assert _svg(api).get("aria-label") == "api 30d: unknown" and _fills(api) == ["#9f9f9f"]
    # web has results on two days of the last 30 only: the rest is unknown, so a lower bound
    web = await (await collector.get("/badge/web/availability.svg")).text()
    label = _svg(web).get("aria-label")
    assert label.startswith("web 30d: ≥ ") and label.endswith(" %"), label
    assert float(label.split("≥ ")[1].rstrip(" %")) < 50
    for bad in ("0", "91", "abc", "-1", "1e3", "", "²", "3.5"):
        resp = await collector.get("/badge/web/availability.svg", params={"days": bad})
        assert resp.status == 400, bad
        assert (await resp.json())["parameter"] == "days"
    assert (await collector.get("/badge/web/availability.svg", params={"days": "90"})).status == 200


async def front_page_figures_refresh_feed_link_and_dark_mode(collector) -> None:
    resp = await collector.get("/")
    html = await resp.text()
    assert '<meta http-equiv="refresh" content="60">' in html
    assert 'rel="alternate"' in resp.headers["Link"] and "/feed.atom" in resp.headers["Link"]
    assert '<a href="/feed.atom" rel="alternate" type="application/atom+xml">' in html
    assert "@media (prefers-color-scheme: dark)" in html and 'content="light dark"' in html

    def figures(service: str) -> dict[str, str]:
        block = re.search(rf'<dl class="avail" aria-label="Availability of {service} [^"]*">(.*?)</dl>', html, re.S).group(1)
        return {dt: text_of(dd) for dt, dd in re.findall(r"<dt>([^<]*)</dt><dd>(.*?)</dd>", block, re.S)}

    assert figures("api") == {p: "— no data" for p in ("24 h", "7 d", "30 d", "90 d")}
    web = figures("web")
    assert set(web) == {"24 h", "7 d", "30 d", "90 d"}
    # the outage three days ago is outside the last 24 h and inside the last 7 days
    assert "100 %" in web["24 h"] and "100 %" not in web["7 d"].split("(")[-1]
    # 83 of the 90 days have no result for web: never counted as up
    assert web["90 d"].startswith("≥ ") and "unknown" in web["90 d"]

    off = await (await collector.get("/", params={"refresh": "0"})).text()
    assert 'http-equiv="refresh"' not in off
    for value in ("soon", "5", "²", "-60"):
        bad = await collector.get("/", params={"refresh": value})
        assert bad.status == 400 and "refresh" in text_of(await bad.text()), value


async def test_feed_badges_figures_refresh_on_one_collector(collector) -> None:
    # one history for all of them (building it is most of the cost); each check is its own function
    await feed_lists_verified_outages_and_maintenance_newest_first_with_evidence(collector)
    await state_badges_follow_the_status_api_and_unknown_is_grey(collector)
    await availability_badge_never_shows_unknown_as_up_and_checks_days(collector)
    await front_page_figures_refresh_feed_link_and_dark_mode(collector)


async def test_private_collector_keeps_feed_and_badges_private(tmp_path, aiohttp_client) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'private.sqlite'}")
    state.config = state.config.model_copy(update={"public_reads": False, "admin_token": "admin-token-0123456789"})
    http = await aiohttp_client(collector_app(state))
    for path in ("/feed.atom", "/badge/web.svg", "/badge/web/availability.svg"):
        assert (await http.get(path)).status == 401, path
    ok = await http.get("/badge/web.svg", headers={"Authorization": "Bearer admin-token-0123456789"})
    assert ok.status == 200 and _fills(await ok.text()) == ["#9f9f9f"]  # nothing judged yet: unknown


# --- the figures' arithmetic, on plain values ---------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAYS = Days.ending(NOW, 90)
ALL_DAYS = set(range(90))


def test_a_figure_over_judged_time_with_the_worst_case_beside_it() -> None:
    outage = [(NOW - 2 * H, NOW - H)]
    unknown = [(NOW - 4 * H, NOW - 3 * H)]
    f = availability_figure("24 h", NOW - 24 * H, days=DAYS, windows=outage, evidence_days=ALL_DAYS,
                            unknown=unknown, judged_until=NOW)
    assert f.best == pytest.approx(100 * 22 / 23) and f.worst == pytest.approx(100 * 22 / 24)
    assert not f.certain
    clean = availability_figure("24 h", NOW - 24 * H, days=DAYS, windows=outage, evidence_days=ALL_DAYS,
                                unknown=[], judged_until=NOW)
    assert clean.certain and clean.best == clean.worst == pytest.approx(100 * 23 / 24)


def test_time_without_results_or_not_judged_is_never_up() -> None:
    nothing = availability_figure("30 d", NOW - 30 * 24 * H, days=DAYS, windows=[], evidence_days=set(),
                                  unknown=[], judged_until=NOW)
    assert nothing.best is None and nothing.worst is None
    assert availability_badge("x", 30, nothing).count("unknown") >= 1
    never_judged = availability_figure("24 h", NOW - 24 * H, days=DAYS, windows=[], evidence_days=ALL_DAYS,
                                       unknown=[], judged_until=None)
    assert never_judged.best is None
    # only today has results: yesterday's 12 hours of the last 24 are unknown, not up
    today = availability_figure("24 h", NOW - 24 * H, days=DAYS, windows=[], evidence_days={89},
                                unknown=[], judged_until=NOW)
    assert today.best == 100 and today.worst == pytest.approx(50)


def test_badge_text_is_escaped() -> None:
    body = svg_badge('<b>"x" & y</b>', "up", "#4c1")
    root = ET.fromstring(body)
    assert root.get("aria-label") == '<b>"x" & y</b>: up'
    assert "<b>" not in body
    assert unescape(root.find("{http://www.w3.org/2000/svg}title").text) == '<b>"x" & y</b>: up'
