"""Current state under missing evidence: GET /api/v1/status and the page's banner, badges and
today's bar follow the latest judged round, and a round without a verdict is never shown as up.

The scenario the shipped config makes easy to meet: six expected agents, quorum `all`, and only
three of them running against a target that is down. Every round is UNKNOWN, so the service's
state is unknown, the banner does not say "All services up" and today's bar is hatched.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collector.config import parse_config
from collector.rules.model import Round, Verdict
from collector.rules.runs import Run, runs_of
from collector.service import CollectorState
from test_status_page import collector_app, text_of

UTC = timezone.utc
AGENTS = [f"a{i}" for i in range(1, 7)]
TOKENS = {a: f"token-{a}-0123456789" for a in AGENTS}
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _round(minute: int, verdict: Verdict) -> Round:
    return Round(T0 + minute * MIN, verdict, ())


@pytest.mark.parametrize("verdicts, expected", [
    ("UUUU", []),
    ("UFFU", [(1, 3, "failed")]),
    ("FFXX", [(0, 2, "failed"), (2, 4, "unknown")]),
    ("XUUF", [(0, 1, "unknown"), (3, 4, "failed")]),
    ("", []),
])
def test_runs_of_keeps_each_stretch_of_rounds_that_were_not_up(verdicts, expected):
    code = {"U": Verdict.UP, "F": Verdict.FAILED, "X": Verdict.UNKNOWN}
    rounds = [_round(i, code[v]) for i, v in enumerate(verdicts)]
    got = runs_of(rounds, T0 + len(verdicts) * MIN)
    assert [((r.start - T0) // MIN, (r.end - T0) // MIN, r.verdict.value) for r in got] == expected


def test_a_sparse_round_lasts_until_the_next_one():
    # an UNKNOWN round standing for a stretch nobody reported ends where the next round starts
    rounds = [_round(0, Verdict.UP), _round(1, Verdict.UNKNOWN), _round(30, Verdict.UP)]
    assert runs_of(rounds, T0 + 31 * MIN) == [Run(T0 + MIN, T0 + 30 * MIN, Verdict.UNKNOWN)]


def make_state(database_url: str) -> CollectorState:
    http = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}
    config = parse_config({
        "database_url": database_url,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [
            # six expected agents, all of them must fail (Haivision's "all six agents")
            {"name": "half", **http, "outage": {"quorum": "all", "min_duration": "12m"}},
            {"name": "flaky", **http, "outage": {"quorum": "all", "min_duration": "12m"}},
            {"name": "fine", **http, "outage": {"quorum": "all", "min_duration": "12m"}},
        ],
    }, "test")
    return CollectorState.create(config)


def _result(slot: datetime, ok: bool, check: str) -> dict:
    return {"id": uuid.uuid4().hex, "check": check, "slot": slot.isoformat(),
            "started": (slot + timedelta(milliseconds=20)).isoformat(), "ok": ok,
            "latency_ms": 4.0 if ok else None, "error": None if ok else "connect"}


@pytest.fixture
async def collector(database_url, aiohttp_client):
    """The last 20 minutes and the current one: `half` failing on three of its six agents (the other three never
    run); `flaky` up on all six, then failing on all six for the last 3 rounds (failing, not yet
    12 minutes); `fine` up on all six."""
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    # Rounds settle 5 s (the grace) after they end: the round before the current one must have
    # settled at the tick, and the current one must not settle before the test has read the
    # page. The current slot's results keep every check from looking silent (two intervals
    # without a result).
    now = datetime.now(UTC)
    if now.second < 7:
        await asyncio.sleep(7 - now.second - now.microsecond / 1e6)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    slots = [minute - timedelta(minutes=m) for m in range(20, -1, -1)]
    for i, agent in enumerate(AGENTS):
        batch = [_result(s, False, "half") for s in slots] if i < 3 else []
        batch += [_result(s, s < minute - timedelta(minutes=3), "flaky") for s in slots]
        batch += [_result(s, True, "fine") for s in slots]
        resp = await http.post("/api/v1/results", json={"agent": agent, "results": batch},
                               headers={"Authorization": f"Bearer {TOKENS[agent]}"})
        assert resp.status == 200, await resp.text()
    await state.evaluator.tick()
    http.minute = minute
    return http


async def test_status_api_says_unknown_failing_and_up_with_since(collector):
    resp = await collector.get("/api/v1/status")
    assert resp.status == 200
    body = await resp.json()
    states = {s["name"]: (s["state"], s["since"]) for s in body["services"]}
    first = collector.minute - timedelta(minutes=20)
    z = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    assert states["half"] == ("unknown", z(first)), body
    assert states["flaky"] == ("failing", z(collector.minute - timedelta(minutes=3)))
    assert states["fine"][0] == "up"
    assert body["all_up"] is False
    assert body["counts"] == {"outage": 0, "failing": 1, "unknown": 1, "degraded": 0, "maintenance": 0, "up": 1}


async def test_page_never_says_all_up_while_a_service_is_unknown(collector):
    html = await (await collector.get("/")).text()
    text = text_of(html)
    assert "All services up" not in text
    assert "No verified outage; 1 service is failing" in text
    badge = re.search(r'<h3><a href="/policies/half">half</a></h3>\s*<p class="state (\w+)">([^<]*)</p>', html)
    assert badge.groups() == ("unknown", "Unknown: too few agents reported")
    # today's bar of `half` is hatched (rounds without a verdict), never plain green
    bars = re.search(r'<ol class="bars" aria-label="half: [^"]*">(.*?)</ol>', html, re.S).group(1)
    today = re.findall(r'class="bar lvl-(\w+)"[^>]*aria-label="([^"]*)"', bars)[-1]
    assert today[0] == "unknown"
    assert "without a verdict (not counted as up)" in today[1] or "no verdict" in today[1]
    fine = re.search(r'<ol class="bars" aria-label="fine: [^"]*">(.*?)</ol>', html, re.S).group(1)
    assert re.findall(r'class="bar lvl-(\w+)"', fine)[-1] == "up"


async def test_status_api_before_any_evaluation_is_unknown(database_url, aiohttp_client):
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    body = await (await http.get("/api/v1/status")).json()
    assert {s["state"] for s in body["services"]} == {"unknown"}
    assert body["all_up"] is False
