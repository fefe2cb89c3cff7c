"""Services, not rows: a contract policy with its checks as components, display names, groups
summarised by their worst member, each service's own page, the history page, and a front page of
many services that stays small.

History goes through the real `POST /api/v1/results` and one real tick of the live evaluator."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from collector.config import ConfigError, parse_config
from collector.service import CollectorState
from collector.status.history import Bar, Days, compact_bars, daily_bars, worst_bars

from test_status_page import TOKENS, bar_labels, collector_app, get_page, post_results, result, text_of

UTC = timezone.utc
HTTP = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s",
        "outage": {"quorum": "all", "min_duration": "2m"}}


def config(database_url: str) -> dict:
    """`shop` (Numezis Business) is computed from `cart` and `pay`; `edge-eu` and `edge-us` are one
    group; `batch` is left off the page; `legacy` is a check of its own, under its own name."""
    return {
        "database_url": database_url,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "admin_token": "admin-token-0123456789",
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [
            {"name": "cart", **HTTP, "display_name": "Shopping cart"},
            {"name": "pay", **HTTP, "display_name": "Payments"},
            {"name": "edge-eu", **HTTP, "display_name": "Edge Europe", "group": "Edge network"},
            {"name": "edge-us", **HTTP, "display_name": "Edge America", "group": "Edge network"},
            {"name": "batch", **HTTP, "status_page": False},
            {"name": "legacy", **HTTP},
        ],
        "policies": [{"name": "shop", "preset": "numezis-business", "components": ["cart", "pay"],
                      "display_name": "Web shop"}],
    }


@pytest.fixture
async def shop(tmp_path, aiohttp_client):
    state = CollectorState.create(parse_config(config(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"), "test"))
    http = await aiohttp_client(collector_app(state))
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    recent = [minute - timedelta(minutes=m) for m in range(30, 0, -1)]
    for agent in TOKENS:
        batch = []
        for check in ("cart", "pay", "edge-eu", "batch", "legacy"):
            batch += [result(s, True, check) for s in recent]
        # pay and edge-us fail on every agent for the last 8 minutes: verified outages
        batch += [result(s, s < minute - timedelta(minutes=8), "edge-us") for s in recent]
        batch = [r for r in batch if r["check"] != "pay"] + [
            result(s, s < minute - timedelta(minutes=8), "pay") for s in recent]
        await post_results(http, agent, batch)
    await state.evaluator.tick()
    return http


def headings(html: str) -> list[str]:
    return re.findall(r'<li class="service[^"]*" id="service-\d+">\s*<div class="service-head">\s*<h3[^>]*>(?:<a [^>]*>)?([^<]+)', html)


async def test_a_contract_is_one_service_with_its_components_and_groups_show_their_worst_member(shop) -> None:
    html = await get_page(shop, "/")
    # the contract under its display name; its checks are its components, not services of their own;
    # the group is one entry; batch is left off; legacy is a check of its own
    assert headings(html) == ["Edge network", "legacy", "Web shop"]
    text = text_of(html)
    assert "2 components: Shopping cart, Payments" in text
    assert "2 services have a verified outage in progress." in text  # the shop and the edge group
    # the group is as bad as its worst member, and says which
    group = html[html.index('id="group-Edge%20network"'):]
    assert re.search(r'<p class="state outage">Verified outage in progress</p>', group[:400])
    assert "Edge America: Since" in text_of(group[:2000])
    assert ": worst member Edge America: " in bar_labels(html, "Edge network")[-1]
    members = re.findall(r'<span class="name"><a href="(/services/[^"]+)">([^<]+)</a></span><span class="state (\w+)">',
                         group)
    assert members[:2] == [("/services/edge-us", "Edge America", "outage"), ("/services/edge-eu", "Edge Europe", "up")]
    # the outage is listed once, for the service, under its display name: not again for pay
    assert text.count("Verified outage: Web shop") == 1 and "Verified outage: Payments" not in text
    assert "Verified outage: Edge America" in text


async def test_status_api_lists_the_services_shown_with_their_components(shop) -> None:
    body = await (await shop.get("/api/v1/status")).json()
    services = {s["name"]: s for s in body["services"]}
    assert sorted(services) == ["edge-eu", "edge-us", "legacy", "shop"]
    assert services["shop"]["display_name"] == "Web shop" and services["shop"]["state"] == "outage"
    assert {c["name"]: c["state"] for c in services["shop"]["component_states"]} == {"cart": "up", "pay": "outage"}
    assert services["edge-us"]["group"] == "Edge network" and services["shop"]["page"] == "/services/shop"
    assert body["counts"]["outage"] == 2 and body["all_up"] is False


async def test_each_service_has_its_own_page_and_the_history_its_own(shop) -> None:
    page = await get_page(shop, "/services/shop")
    text = text_of(page)
    assert "Web shop" in text and "Verified outage in progress" in text
    assert len(bar_labels(page, "Web shop")) == 90
    # the components, each with its own bars and state
    assert len(bar_labels(page, "Shopping cart")) == 90 and len(bar_labels(page, "Payments")) == 90
    assert text.count("Verified outage: Web shop") == 1 and "Verified outage: Edge America" not in text
    # a component has a page of its own too, and so does a check left off the front page
    assert "Verified outage: Payments" in text_of(await get_page(shop, "/services/pay"))
    assert "batch" in text_of(await get_page(shop, "/services/batch"))
    assert "There is no service named 'nope'" in text_of(await get_page(shop, "/services/nope", 404))
    history = text_of(await get_page(shop, "/history"))
    assert "Verified outage: Web shop" in history and "Verified outage: Edge America" in history
    assert "Verified outage: Payments" not in history and "Bad refresh parameter" in text_of(
        await get_page(shop, "/history?refresh=x", 400))


def test_presentation_keys_are_validated_naming_the_key() -> None:
    bad = config("sqlite+aiosqlite:///x.sqlite")
    bad["checks"][0]["display_name"] = ""
    with pytest.raises(ConfigError, match=r"checks\.0\.display_name"):
        parse_config(bad, "test")
    bad = config("sqlite+aiosqlite:///x.sqlite")
    bad["policies"][0]["status_page"] = "maybe"
    with pytest.raises(ConfigError, match=r"policies\.0\.status_page"):
        parse_config(bad, "test")
    # an agent never receives what only the status page reads
    good = parse_config(config("sqlite+aiosqlite:///x.sqlite"), "test")
    assert not {"display_name", "group", "status_page"} & set(good.checks[0].prober_spec())


def test_a_group_day_is_up_only_when_every_member_was() -> None:
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    days = Days.ending(now, 3)
    up = daily_bars([], {0, 1, 2}, days)
    silent = daily_bars([], {0, 2}, days)          # no result on day 1
    down = daily_bars([(datetime(2026, 11, 10, 1, tzinfo=UTC), datetime(2026, 11, 10, 1, 1, tzinfo=UTC))], {0, 1, 2}, days)
    bars = worst_bars([("a", up), ("b", silent), ("c", down)])
    assert [b.level for b in bars] == ["up", "nodata", "minor"]
    assert bars[1].label.endswith("worst member b: no data") and "worst member c: " in bars[2].label


def test_uneventful_days_are_one_bar_and_eventful_days_keep_their_own() -> None:
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    days = Days.ending(now, 10)
    blip = (datetime(2026, 11, 6, 3, tzinfo=UTC), datetime(2026, 11, 6, 3, 10, tzinfo=UTC))
    bars = daily_bars([blip], set(range(2, 10)), days, maintenance=[(datetime(2026, 11, 8, 1, tzinfo=UTC),
                                                                      datetime(2026, 11, 8, 2, tzinfo=UTC))])
    compact = compact_bars(bars, days)
    # 2 days without data, 3 up, the outage day, 1 up, the maintenance day, 2 up
    assert [(b.level, b.span) for b in compact] == [("nodata", 2), ("up", 3), ("minor", 1), ("up", 1), ("up", 1),
                                                    ("up", 2)]
    assert compact[1].label == "Tue 3 Nov 2026 to Thu 5 Nov 2026: 100 % available every day"
    assert compact[4].label.endswith("announced maintenance")
    assert sum(b.span for b in compact) == 10 and isinstance(compact[0], Bar)


async def test_a_large_page_is_computed_once_for_its_readers_and_refreshed_behind_them() -> None:
    import asyncio

    from collector.status.cache import Kept, PageCache

    calls = []

    async def compute() -> Kept:
        calls.append(1)
        await asyncio.sleep(0.05)
        return Kept(f"page {len(calls)}".encode(), {}, 200, __import__("time").monotonic())

    cache = PageCache(fresh=0.2, stale=5.0)
    # readers arriving together share one computation
    pages = await asyncio.gather(*(cache.get("/", compute) for _ in range(5)))
    assert len(calls) == 1 and {p.body for p in pages} == {b"page 1"}
    await asyncio.sleep(0.25)
    # stale: the kept page at once, a fresh one computed behind it
    assert (await cache.get("/", compute)).body == b"page 1"
    await asyncio.sleep(0.1)
    assert len(calls) == 2 and (await cache.get("/", compute)).body == b"page 2"

    async def small() -> Kept:
        calls.append(1)
        return Kept(b"small", {}, 200, 0.0, keep=False)

    # a page not to be kept is computed for every reader
    assert (await cache.get("s", small)).body == b"small" and (await cache.get("s", small)).body == b"small"
    assert len(calls) == 4 and "s" not in cache.kept


async def test_a_recurring_series_shows_its_upcoming_occurrences_judged_by_the_contract(shop) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)
    resp = await shop.post("/api/v1/maintenance", headers={"Authorization": "Bearer admin-token-0123456789"},
                           json={"policy": "shop", "kind": "planned", "start": tomorrow.isoformat(),
                                 "rrule": "FREQ=DAILY;COUNT=30", "duration": "1h", "note": "nightly backup"})
    assert resp.status == 201, await resp.text()
    text = text_of(await get_page(shop, "/services/shop"))
    # a week ahead is listed; recorded a day before, short of the 72 hours' notice planned maintenance
    # longer than 15 minutes needs (Numezis SaaS SLA §4.1): not compliant
    assert 1 <= text.count("Planned maintenance: Web shop (upcoming)") <= 8
    assert "nightly backup" in text and "not compliant" in text
    feed = await (await shop.get("/feed.atom")).text()
    assert "Recurring planned maintenance of shop announced" in feed and "FREQ=DAILY;COUNT=30, 1 h each" in feed
