"""Degraded on the status page: a service whose latest round was DEGRADED says `degraded` (badge,
banner, GET /api/v1/status), a day with degraded time and no outage is drawn amber, and an
outage's evidence shows what the agents reported in it: the failing step, its error and detail,
and the phases, from the stored results of the window's first and last round."""

from __future__ import annotations

import asyncio

import re
import uuid
from datetime import datetime, timedelta, timezone

from collector.config import parse_config
from collector.rules.runs import Run
from collector.rules.model import Verdict
from collector.service import CollectorState
from collector.status.history import Days, current_state, daily_bars, result_details
from test_status_page import bar_labels, collector_app, get_page, service_state, text_of

UTC = timezone.utc
AGENTS = ("a1", "a2", "a3")
TOKENS = {a: f"token-{a}-0123456789" for a in AGENTS}
PHASES = {"dns": 0.004, "connect": 0.012, "tls": 0.031, "first_byte": 2.35}


def test_a_day_with_degraded_time_and_no_outage_is_amber_and_says_how_long():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    days = Days.ending(now, 3)
    yesterday = days.starts[1]
    slow = [(yesterday + timedelta(hours=9), yesterday + timedelta(hours=9, minutes=12))]
    outage = [(days.starts[0] + timedelta(hours=1), days.starts[0] + timedelta(hours=1, minutes=5))]
    bars = daily_bars(outage, {0, 1, 2}, days, degraded=slow + [(days.starts[0], days.starts[0] + timedelta(hours=1))])
    assert [b.level for b in bars] == ["minor", "degraded", "up"]   # an outage's level wins over amber
    assert bars[1].availability == 100.0 and bars[1].degraded_us == 12 * 60 * 1_000_000
    assert bars[1].label.endswith("100 % available, no verified outage; 12 min degraded (slower than its limit)")


def test_current_state_is_degraded_when_the_latest_judged_run_is():
    now = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)
    judged = datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    run = Run(judged - timedelta(minutes=3), judged, Verdict.DEGRADED)
    state = current_state(open_since=None, maintenance_until=None, maintenance_kind=None,
                          latest_slots={"web": judged}, interval=60, grace=5, now=now, judged_until=judged,
                          latest_run=run)
    assert (state.kind, state.text, state.since) == ("degraded", "Degraded", run.start)
    # an older degraded run does not speak for the latest round
    earlier = Run(judged - timedelta(minutes=9), judged - timedelta(minutes=6), Verdict.DEGRADED)
    assert current_state(open_since=None, maintenance_until=None, maintenance_kind=None, latest_slots={"web": judged},
                         interval=60, grace=5, now=now, judged_until=judged, latest_run=earlier).kind == "up"


class _Row:
    def __init__(self, agent, slot, ok, **kw):
        self.agent_id, self.check, self.slot, self.ok = agent, "shop", slot, ok
        self.error, self.detail = kw.get("error"), kw.get("detail")
        self.status_code, self.latency_ms, self.extra = kw.get("status_code"), kw.get("latency_ms"), kw.get("extra")


def test_result_details_take_each_agents_latest_result_in_a_sentence():
    s0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    rows = [
        _Row("a1", s0, False, error="timeout", detail="no answer in 5 s"),
        _Row("a1", s0 + timedelta(minutes=2), False, error="assertion", detail="body lacks 'Welcome'", status_code=200,
             extra={"failed_step": "sign in", "phases": {"dns": 0.004, "first_byte": 1.5}}),
        _Row("a2", s0, True, latency_ms=2350.0, extra={"phases": {"connect": 0.012}}),
        _Row("a3", s0, False, error="status", detail="status 503 not in [200]", status_code=503),
    ]
    assert [(d["agent"], d["text"]) for d in result_details(rows)] == [
        ("a1", "assertion at step 'sign in': body lacks 'Welcome' (status 200); phases: dns 4 ms, first_byte 1.5 s"),
        ("a2", "degraded (ok, but slower than its limit): 2350 ms; phases: connect 12 ms"),
        ("a3", "status: status 503 not in [200]"),
    ]


def make_state(database_url: str) -> CollectorState:
    http = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [
            {"name": "web", **http, "outage": {"quorum": "majority", "min_duration": "0s"}},
            {"name": "shop", **http, "outage": {"quorum": "majority", "min_duration": "0s"}},
        ],
        # Numezis SaaS SLA §1: a degraded round is downtime under this contract
        "policies": [{"name": "contract", "preset": "numezis-business", "components": ["shop"]}],
    }, "test"))


def _result(slot: datetime, check: str, *, ok: bool = True, **fields) -> dict:
    return {"id": uuid.uuid4().hex, "check": check, "slot": slot.isoformat(),
            "started": (slot + timedelta(milliseconds=20)).isoformat(), "ok": ok,
            "latency_ms": fields.pop("latency_ms", 4.0 if ok else None), "error": None if ok else "assertion", **fields}


async def test_degraded_service_on_the_page_and_in_the_api_with_evidence_of_steps_and_phases(
        database_url, aiohttp_client) -> None:
    """1. `web`: up for 20 minutes, then slow on every agent for the last 3 rounds: degraded, and
          today's bar amber (its rule does not count degraded rounds as down).
       2. `shop`, three days ago: a journey failing at its step "sign in" on every agent from
          10:10 to 10:12, and every agent slow from 10:20 to 10:22. Under the numezis contract both
          are outages; the page's evidence says the failing step, its error, and the phases."""
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    now = datetime.now(UTC)
    # Rounds settle 5 s (the grace) after they end: the round before the current one must have
    # settled at the tick, and the current one must not settle before the test has read the
    # page; the current slot's results keep the checks from looking silent.
    if now.second < 7:
        await asyncio.sleep(7 - now.second - now.microsecond / 1e6)
        now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    recent = [minute - timedelta(minutes=m) for m in range(20, -1, -1)]
    base = datetime.combine((now - timedelta(days=3)).date(), datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
    steps_failed = [{"name": "login page", "ok": True, "status_code": 200, "latency_ms": 80},
                    {"name": "sign in", "ok": False, "error": "assertion", "detail": "body lacks 'Welcome'",
                     "status_code": 200, "latency_ms": 95}]
    for agent in AGENTS:
        batch = [_result(s, "web", degraded=s >= minute - timedelta(minutes=3), phases=PHASES) for s in recent]
        batch += [_result(s, "shop") for s in recent]
        for i in range(30):
            slot = base + timedelta(minutes=i)
            if 10 <= i < 13:
                batch.append(_result(slot, "shop", ok=False, detail="body lacks 'Welcome'", failed_step="sign in",
                                     steps=steps_failed, phases=PHASES))
            else:
                batch.append(_result(slot, "shop", degraded=20 <= i < 23, latency_ms=2350.0 if 20 <= i < 23 else 4.0,
                                     phases=PHASES))
        resp = await http.post("/api/v1/results", json={"agent": agent, "results": batch},
                               headers={"Authorization": f"Bearer {TOKENS[agent]}"})
        assert resp.status == 200, await resp.text()
    await state.evaluator.tick()

    body = await (await http.get("/api/v1/status")).json()
    states = {s["name"]: s for s in body["services"]}
    assert states["web"]["state"] == "degraded"
    assert states["web"]["since"] == (minute - timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    # shop is the contract's component: one service with it, not a service of its own
    assert "shop" not in states and states["contract"]["state"] == "up"
    assert [(c["name"], c["state"]) for c in states["contract"]["component_states"]] == [("shop", "up")]
    assert body["counts"]["degraded"] == 1 and body["all_up"] is False
    spec = await (await http.get("/api/v1/openapi.json")).json()
    enum = spec["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "degraded" in enum["properties"]["services"]["items"]["properties"]["state"]["enum"]

    html = await get_page(http, "/")
    assert service_state(html, "web") == "Degraded"
    assert '<p class="state degraded">Degraded</p>' in html  # the amber badge
    text = text_of(html)
    assert "No verified outage; 1 service is degraded: up, but slower than its limit." in text
    assert re.findall(r'class="bar lvl-(\w+)"', html.split('aria-label="web: ')[1])[89] == "degraded"
    assert bar_labels(html, "web")[-1].endswith("3 min degraded (slower than its limit)")
    assert "amber: up but degraded for part of the day" in text  # the legend says what amber means

    # the contract's two outages (failed, then degraded), each with what the agents reported
    outages = (await (await http.get("/api/v1/outages", params={"policy": "contract"})).json())["outages"]
    assert [(o["start"], o["end"]) for o in outages] == [
        (t.isoformat().replace("+00:00", "Z"), (t + timedelta(minutes=3)).isoformat().replace("+00:00", "Z"))
        for t in (base + timedelta(minutes=10), base + timedelta(minutes=20))]
    for agent in AGENTS:
        assert (f"{agent} (shop, {(base + timedelta(minutes=12)):%Y-%m-%d %H:%M} UTC): assertion at step 'sign in': "
                "body lacks 'Welcome'; phases: dns 4 ms, connect 12 ms, tls 31 ms, first_byte 2.35 s") in text
        assert (f"{agent} (shop, {(base + timedelta(minutes=22)):%Y-%m-%d %H:%M} UTC): degraded (ok, but slower than "
                "its limit): 2350 ms; phases: dns 4 ms") in text
    assert ("shop: failed in 0 of 3 rounds, degraded in 3; degraded: a1, a2, a3 in all 3 rounds; "
            "succeeded: a1, a2, a3 in all 3 rounds") in text

    # the contract's month report counts the degraded rounds and minutes apart
    from zoneinfo import ZoneInfo
    period = base.astimezone(ZoneInfo("Europe/Zurich")).strftime("%Y-%m")
    report = text_of(await get_page(http, f"/policies/contract/{period}"))
    assert "Minutes degraded (up, but slower than the checks' limit), counted as down 3 min" in report
    assert re.search(r"Rounds up / degraded / failed / unknown \d+ / 3 / 3 / \d+", report), report
