"""Month reports and claims from the evaluator's rollups (runs of non-UP rounds, stored windows,
progress) equal the raw-results evaluation of the same data, figure for figure: for a six-agent
quorum-all policy on a 6-minute check (haivision-streaming), a two-endpoint policy
(nexon-vision), 60-second policies with degraded rounds counted as down (numezis-business), with
a termination right that reads earlier months (nexgen-cpu) and with per-outage credits
(nexcess); with failures, agents missing, all agents silent, maintenance, results that arrive
after their rounds were first judged and results delivered twice. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from collector import evaluator as evaluator_module
from collector import reporting, rollup_reports, store
from collector.config import parse_config
from collector.migrate import upgrade_async
from collector.service import CollectorState

UTC = timezone.utc
AGENTS = ("a1", "a2", "a3", "a4", "a5", "a6")
D0 = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)   # the data: across the month's end in UTC, Zurich, Chicago
D1 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LATE = (datetime(2026, 10, 31, 22, 0, tzinfo=UTC), datetime(2026, 11, 1, 4, 0, tzinfo=UTC))  # a6's, delivered late
PERIODS = ("2026-09", "2026-10", "2026-11")

POLICIES = {
    "streaming": ("haivision-streaming", ["ping"]),
    "nexon": ("nexon-vision", ["web", "api"]),
    "numezis": ("numezis-business", ["web"]),
    "cpu": ("nexgen-cpu", ["web"]),
    "transit": ("nexcess", ["api"]),
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def within(moment: datetime, start: str, end: str) -> bool:
    return at(start) <= moment < at(end)


def vote(check: str, agent: str, slot: datetime) -> str | None:
    """Each agent's vote: "ok", "slow" (ok, degraded), "fail", or None (no result)."""
    if check == "ping":
        if within(slot, "2026-10-31T19:00", "2026-10-31T19:36") and agent == "a2":
            return None                                   # one of six missing: UNKNOWN under `all`
        if within(slot, "2026-11-01T01:00", "2026-11-01T01:36"):
            return "fail"                                 # 6 rounds: over 12 minutes, an outage
        if within(slot, "2026-11-01T05:00", "2026-11-01T05:12"):
            return "fail"                                 # 2 rounds: too short
        return "ok"
    if within(slot, "2026-11-01T02:00", "2026-11-01T02:30"):
        return None                                       # every agent silent
    if check == "web":
        if within(slot, "2026-10-31T18:00", "2026-10-31T18:40") and agent in ("a4", "a5", "a6"):
            return None
        if within(slot, "2026-10-31T20:00", "2026-10-31T20:25") or within(slot, "2026-10-31T22:55", "2026-10-31T23:05") \
                or within(slot, "2026-10-31T23:50", "2026-11-01T00:20"):
            return "fail"
        if within(slot, "2026-10-31T21:00", "2026-10-31T21:10") and agent != "a1":
            return "slow"
        return "ok"
    if within(slot, "2026-11-01T03:00", "2026-11-01T03:20") and agent in ("a1", "a2", "a3", "a6"):
        return "fail"
    if within(slot, "2026-11-01T06:00", "2026-11-01T06:07"):
        return "fail"
    return "ok"


def result(check: str, agent: str, slot: datetime, what: str, received: datetime) -> dict:
    return {"result_id": uuid.uuid4().hex, "check": check, "slot": slot, "started": slot, "ok": what != "fail",
            "latency_ms": None, "status_code": None, "error": "timeout" if what == "fail" else None, "detail": None,
            "received_at": received, "degraded": what == "slow", "extra": None}


def history() -> dict[str, list[tuple[datetime, str]]]:
    """(agent, check) -> [(slot, vote)] over [D0, D1)."""
    out: dict = {}
    for check, interval in (("web", 60), ("api", 60), ("ping", 360)):
        slot = D0
        while slot < D1:
            for agent in AGENTS:
                what = vote(check, agent, slot)
                if what is not None:
                    out.setdefault((agent, check), []).append((slot, what))
            slot += timedelta(seconds=interval)
    return out


def make_state(database_url: str) -> CollectorState:
    check = lambda name, interval: {"name": name, "type": "http", "interval": interval,  # noqa: E731
                                    "url": "http://127.0.0.1:1/", "timeout": "5s",
                                    "outage": {"quorum": "majority", "min_duration": "0s"}}
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [check("web", 60), check("api", 60), check("ping", 360)],
        "policies": [{"name": name, "preset": preset, "components": components}
                     for name, (preset, components) in POLICIES.items()],
    }, "test"))


async def ship(state: CollectorState, agent: str, rows: list[dict]) -> None:
    for i in range(0, len(rows), 2000):
        async with state.sessionmaker() as session:
            await store.insert_results(session, agent, rows[i:i + 2000], replica=state.instance_id)
            await session.commit()
        state.note_results(agent, rows[i:i + 2000])


async def settle(state: CollectorState, now: datetime) -> None:
    for _ in range(50):
        await state.evaluator.tick(now)
        if not any(lp.dirty and lp.backlog_before(state.evaluator.settled_until(lp, now))
                   for lp in state.evaluator.policies):
            return


async def compare(state: CollectorState, now: datetime) -> dict[tuple[str, str], dict]:
    """Every policy's report of every period, from the rollups and from raw results: equal."""
    reports = {}
    async with state.sessionmaker() as session:
        for name in POLICIES:
            policy = state.policies[name]
            expected = state.expected_by_component(policy)
            for period in PERIODS:
                from_rollups = await rollup_reports.month_report(session, policy, period, now=now)
                assert from_rollups is not None, (name, period)
                raw = await reporting._raw_report_from_db(session, policy, period, [], expected, now)
                assert from_rollups == raw, (name, period)
                reports[name, period] = from_rollups
    return reports


async def test_month_reports_and_claims_from_rollups_equal_the_raw_evaluation(database_url) -> None:
    state = make_state(database_url)
    try:
        await upgrade_async(database_url)
        await state.sync_config()
        async with state.sessionmaker() as session:
            for policy, kind, start, end, recorded in (
                    ("numezis", "emergency", "2026-10-31T20:05", "2026-10-31T20:15", "2026-10-31T20:30"),
                    ("transit", "scheduled", "2026-11-01T03:05", "2026-11-01T03:10", "2026-10-30T00:00"),
                    ("streaming", "urgent", "2026-11-01T01:00", "2026-11-01T01:12", "2026-10-31T12:00"),
                    ("nexon", "emergency", "2026-11-01T00:00", "2026-11-01T00:10", "2026-11-01T00:01")):
                await store.add_maintenance(session, policy, kind, at(start), at(end), "works",
                                            recorded_by="api", now=at(recorded))
            await session.commit()

        # 1. delivered hour by hour, judged after each hour; a6's results of LATE held back
        votes = history()
        held: dict[str, list[dict]] = {}
        hour = D0
        while hour < D1:
            nxt = hour + timedelta(hours=1)
            for (agent, check), slots in votes.items():
                rows, late = [], []
                for slot, what in slots:
                    if hour <= slot < nxt:
                        (late if agent == "a6" and LATE[0] <= slot < LATE[1] else rows).append(
                            result(check, agent, slot, what, nxt))
                held.setdefault(agent, []).extend(late)
                await ship(state, agent, rows)
            await settle(state, nxt + timedelta(minutes=2))
            hour = nxt
        before = await compare(state, D1 + timedelta(minutes=2))
        # without a6 the all-six policy has no verdict where a6 was held back
        assert before["streaming", "2026-10"]["unknown_minutes"] > 60

        # 2. the late results, then one agent's batch delivered again (duplicates, nothing changes)
        now = D1 + timedelta(minutes=30)
        await ship(state, "a6", held["a6"])
        await ship(state, "a1", [result("web", "a1", s, w, now) for s, w in votes["a1", "web"][:50]])
        await settle(state, now)
        after = await compare(state, now)

        # the reports followed the late results: judged again, the rollups changed with them
        assert after["streaming", "2026-10"]["unknown_minutes"] < before["streaming", "2026-10"]["unknown_minutes"]
        streaming = after["streaming", "2026-10"]    # Chicago: 01:00Z on 1 November is still October
        assert (streaming["outage_minutes"], streaming["excluded_minutes"]) == (36, 12)
        assert [o["start"] for o in after["streaming", "2026-11"]["outages"]] == ["2026-11-01T05:00:00Z"]
        numezis = after["numezis", "2026-10"]        # Zurich: October ends at 23:00Z
        assert (numezis["outage_minutes"], numezis["degraded_minutes"], numezis["excluded_minutes"]) == (40, 10, 10)
        transit = after["transit", "2026-11"]
        assert [o["start"] for o in transit["outages"]] == ["2026-11-01T03:00:00Z", "2026-11-01T06:00:00Z"]
        assert transit["credit"]["percent"] == 5 and transit["verdict"] == "missed"
        # NexGen §4: November's termination right read October (from the rollups) as history
        note = after["cpu", "2026-11"]["termination_note"]
        assert "2026-09" in note and "2026-10" not in note
        assert after["nexon", "2026-09"]["availability_percent"] is None    # no evidence: never 100
        assert after["nexon", "2026-11"]["unknown_minutes"] >= 30          # every agent silent for 30 minutes

        # 3. claims over an outage, over a short failure and over silent agents
        async with state.sessionmaker() as session:
            for name, start, end in (("numezis", "2026-10-31T19:50", "2026-10-31T20:40"),
                                     ("transit", "2026-11-01T02:10", "2026-11-01T03:30"),
                                     ("transit", "2026-11-01T05:55", "2026-11-01T06:30"),
                                     ("streaming", "2026-11-01T00:30", "2026-11-01T02:00")):
                policy = state.policies[name]
                from_rollups = await rollup_reports.claim(session, policy, at(start), at(end))
                assert from_rollups is not None, (name, start)
                raw = await reporting._raw_claim_from_db(session, policy, at(start), at(end), [],
                                                         state.expected_by_component(policy))
                assert from_rollups == raw, (name, start)
                assert from_rollups["verified_minutes"] > 0 or from_rollups["short_failure_minutes"] > 0, (name, start)
    finally:
        await state.engine.dispose()


async def test_rollups_answer_only_what_was_judged(database_url, monkeypatch) -> None:
    """Progress stays behind while a backlog waits for a later tick (the report is then left to
    the raw path); a result older than a policy's first evidence gets the stretch up to it judged
    (UNKNOWN), not left to look up; a policy never judged has no rollup report."""
    state = make_state(database_url)
    try:
        await upgrade_async(database_url)
        await state.sync_config()
        policy = state.policies["transit"]
        async with state.sessionmaker() as session:
            assert await rollup_reports.month_report(session, policy, "2026-10", now=D1) is None

        monkeypatch.setattr(evaluator_module, "ROUNDS_PER_TICK", 60)
        start = D1 - timedelta(hours=4)
        rows = {a: [result("api", a, start + timedelta(minutes=i), "ok", D1) for i in range(240)] for a in AGENTS}
        for agent, mine in rows.items():
            await ship(state, agent, mine)
        now = D1 + timedelta(minutes=1)
        await state.evaluator.tick(now)
        async with state.sessionmaker() as session:
            assert "transit" not in await store.judged_until(session, ["transit"])
            assert await rollup_reports.month_report(session, policy, "2026-11", now=now) is None
        await settle(state, now)
        async with state.sessionmaker() as session:
            assert (await store.judged_until(session, ["transit"]))["transit"] == D1
            assert await rollup_reports.month_report(session, policy, "2026-11", now=now) is not None

        # one result five hours before the first: the hours between are judged, as UNKNOWN
        early = start - timedelta(hours=5)
        await ship(state, "a1", [result("api", "a1", early, "fail", now)])
        await settle(state, now)
        async with state.sessionmaker() as session:
            runs = (await store.runs_between(session, ["transit"], early, start)).get("transit", [])
            assert runs and runs[0].start <= early + timedelta(minutes=1) and runs[-1].end == start
            from_rollups = await rollup_reports.month_report(session, policy, "2026-10", now=now)
            raw = await reporting._raw_report_from_db(session, policy, "2026-10", [],
                                                      state.expected_by_component(policy), now)
            assert from_rollups == raw and from_rollups["unknown_minutes"] > 5 * 60 - 2
    finally:
        await state.engine.dispose()
