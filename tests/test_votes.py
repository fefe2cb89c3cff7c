"""One vote per agent, check and slot: a stored vote is never rewritten, `started` lies in its own
slot, and result ids belong to their agent. Against a real collector (aiohttp on loopback) on
SQLite and PostgreSQL, and the agent's real spool and shipper."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from agent_helpers import wait_until  # first: puts the repo on sys.path
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from agent.collector_client import CollectorClient
from agent.metrics import AgentMetrics
from agent.shipper import Shipper
from agent.spool import Spool
from collector import migrate, store
from collector.app import create_app
from collector.config import parse_config
from collector.db import Result
from collector.service import CollectorState
from protocol.timestamps import rfc3339

TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789", "a3": "token-a3-0123456789"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
INTERVAL = 60


def make_state(database_url: str) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": INTERVAL, "url": "http://127.0.0.1:1/",
                    "timeout": "5s", "outage": {"quorum": "all", "min_duration": "2m"}}],
    }, "test"))


def base_slot() -> datetime:
    return (datetime.now(timezone.utc) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


def vote(slot: datetime, ok: bool, *, started: datetime | None = None, rid: str | None = None) -> dict:
    return {"id": rid or uuid.uuid4().hex, "check": "web", "slot": rfc3339(slot),
            "started": rfc3339(started or slot + timedelta(milliseconds=15)), "ok": ok,
            "latency_ms": 3.2 if ok else None, "status_code": 200 if ok else None, "error": None if ok else "connect"}


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def api(database_url, aiohttp_client):
    state = make_state(database_url)
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def post(client, agent: str, results: list[dict]):
    return await client.post("/api/v1/results", json={"agent": agent, "results": results},
                             headers={"Authorization": f"Bearer {TOKENS[agent]}"})


async def stored(state: CollectorState, **where) -> list[tuple[str, str, bool]]:
    """(agent, result id, ok) of the stored results, filtered by column values."""
    async with state.sessionmaker() as session:
        stmt = select(Result.agent_id, Result.result_id, Result.ok).order_by(Result.agent_id, Result.slot)
        for column, value in where.items():
            stmt = stmt.where(getattr(Result, column) == value)
        return [tuple(r) for r in (await session.execute(stmt)).all()]


async def refused_total(client, reason: str) -> str:
    text = await (await client.get("/metrics")).text()
    return next(line for line in text.splitlines() if line.startswith(f'uptime_collector_results_refused_total{{reason="{reason}"}}'))


async def test_rewriting_a_failed_vote_with_a_new_id_is_refused_as_conflict_and_the_outage_stays(api) -> None:
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(6)]
    failed = {1, 2, 3}
    first: dict[str, list[dict]] = {}
    for agent in TOKENS:
        first[agent] = [vote(s, i not in failed) for i, s in enumerate(slots)]
        assert (await post(api, agent, first[agent])).status == 200
    await api.state.evaluator.tick()
    window = [(z(slots[1]), z(slots[4]))]
    outages = (await (await api.get("/api/v1/outages", params={"policy": "web"})).json())["outages"]
    assert [(w["start"], w["end"]) for w in outages] == window

    # a1 takes its failures back: successes with new ids for the same slots, plus one new slot
    rewrite = [vote(slots[i], True) for i in sorted(failed)] + [vote(s0 + timedelta(minutes=6), True)]
    resp = await post(api, "a1", rewrite)
    assert resp.status == 422
    body = await resp.json()
    assert [(r["index"], r["id"], r["reason"]) for r in body["rejected"]] == [
        (i, rewrite[i]["id"], "conflict") for i in range(3)]
    standing = first["a1"][1]["id"]
    assert body["rejected"][0]["error"] == (
        f"results[0].slot: agent 'a1' already voted in slot {slots[1].isoformat()} of check 'web' "
        f"(stored result {standing!r}, failed); the first vote stands and is never replaced")
    assert "and 2 more results refused" in body["error"]
    assert await refused_total(api, "conflict") == 'uptime_collector_results_refused_total{reason="conflict"} 3.0'

    # nothing of the refused batch was stored, not even its good new slot; the failures stand
    assert await stored(api.state, agent_id="a1", slot=slots[2]) == [("a1", first["a1"][2]["id"], False)]
    assert await stored(api.state, agent_id="a1", slot=s0 + timedelta(minutes=6)) == []
    await api.state.evaluator.tick()
    outages = (await (await api.get("/api/v1/outages", params={"policy": "web"})).json())["outages"]
    assert [(w["start"], w["end"]) for w in outages] == window
    # the culprits set aside, the rest of the batch is stored
    again = await post(api, "a1", rewrite[3:])
    assert await again.json() == {"accepted": 1, "duplicates": 0}


async def test_the_same_result_again_is_a_duplicate_even_beside_a_conflict(api) -> None:
    s0 = base_slot()
    original = vote(s0, False)
    assert await (await post(api, "a1", [original])).json() == {"accepted": 1, "duplicates": 0}
    # a replayed batch: the same id is acknowledged, also when its content was altered
    replay = await post(api, "a1", [original, {**original, "ok": True, "error": None}])
    assert await replay.json() == {"accepted": 0, "duplicates": 2}
    # a new id for the slot listed before the replayed original: only the new one is a conflict
    intruder = vote(s0, True)
    resp = await post(api, "a1", [intruder, original])
    assert resp.status == 422
    assert [(r["index"], r["reason"]) for r in (await resp.json())["rejected"]] == [(0, "conflict")]
    assert await stored(api.state, agent_id="a1") == [("a1", original["id"], False)]


async def test_two_votes_of_one_agent_for_one_slot_in_one_batch_the_first_stands(api) -> None:
    s0 = base_slot()
    first, second, other = vote(s0, False), vote(s0, True), vote(s0 + timedelta(minutes=1), True)
    resp = await post(api, "a1", [first, other, second])
    assert resp.status == 422
    body = await resp.json()
    assert [(r["index"], r["id"], r["reason"]) for r in body["rejected"]] == [(2, second["id"], "conflict")]
    assert "(results[0] of this batch)" in body["rejected"][0]["error"]
    assert await stored(api.state) == []  # refused whole
    assert await (await post(api, "a1", [first, other])).json() == {"accepted": 2, "duplicates": 0}
    assert await stored(api.state, slot=s0) == [("a1", first["id"], False)]


async def test_a_second_vote_a_millisecond_off_its_slot_is_refused(api) -> None:
    # S + 1 ms is another key for the database but the same round for the rules: refused, so that
    # a failed vote cannot be outvoted by its own agent's later "success"
    s0 = base_slot()
    failed = vote(s0, False)
    assert await (await post(api, "a1", [failed])).json() == {"accepted": 1, "duplicates": 0}
    off = vote(s0 + timedelta(milliseconds=1), True)
    resp = await post(api, "a1", [off])
    assert resp.status == 422
    body = await resp.json()
    assert [(r["id"], r["reason"]) for r in body["rejected"]] == [(off["id"], "inconsistent")]
    assert "results[0].slot:" in body["error"] and "is not a slot of check 'web'" in body["error"]
    assert await stored(api.state) == [("a1", failed["id"], False)]


@pytest.mark.parametrize(("offset", "accepted"), [
    (timedelta(days=1), False),                                # the attack: a success "started" a day later
    (timedelta(seconds=INTERVAL + 30), False),                 # the next slot, beyond the skew allowance
    (timedelta(seconds=INTERVAL + 30) - timedelta(milliseconds=1), True),
    (timedelta(seconds=-30), True),                            # the clock skew allowance, before the slot
    (timedelta(seconds=-30, milliseconds=-1), False),
])
async def test_started_must_lie_within_its_own_slot(api, offset, accepted) -> None:
    s0 = base_slot() - timedelta(days=2)  # a day after it is still in the past
    late = vote(s0, True, started=s0 + offset)
    resp = await post(api, "a1", [vote(s0 + timedelta(minutes=1), True), late])
    if accepted:
        assert resp.status == 200, await resp.text()
        return
    assert resp.status == 422
    [refusal] = (await resp.json())["rejected"]
    assert (refusal["index"], refusal["id"], refusal["reason"]) == (1, late["id"], "inconsistent")
    expected = "lies after its slot" if offset > timedelta(0) else "lies before its slot"
    assert refusal["error"].startswith(f"results[1].started: {(s0 + offset).isoformat()} {expected}")
    assert await refused_total(api, "inconsistent") == 'uptime_collector_results_refused_total{reason="inconsistent"} 1.0'


async def test_a_removed_checks_late_results_are_held_to_their_slot_too(api) -> None:
    s0 = base_slot() - timedelta(days=2)
    assert (await api.delete("/api/v1/checks/web", headers=ADMIN)).status == 200
    day_late = vote(s0, True, started=s0 + timedelta(days=1))
    resp = await post(api, "a1", [day_late])
    assert resp.status == 422
    assert (await resp.json())["rejected"][0]["error"] == (
        f"results[0].started: {(s0 + timedelta(days=1)).isoformat()} lies after its slot {s0.isoformat()} "
        f"ended (interval {INTERVAL} s)")
    assert (await post(api, "a1", [vote(s0, True)])).status == 200  # evidence before the removal still counts


async def test_an_agent_posting_another_agents_result_id_stores_its_own_result(api) -> None:
    s0 = base_slot()
    theirs = vote(s0, False)
    assert await (await post(api, "a1", [theirs])).json() == {"accepted": 1, "duplicates": 0}
    # a2 spends a1's id: before, that was a "duplicate" acknowledged and dropped
    mine = {**theirs, "ok": True, "error": None, "latency_ms": 2.0, "status_code": 200}
    assert await (await post(api, "a2", [mine])).json() == {"accepted": 1, "duplicates": 0}
    assert await stored(api.state, result_id=theirs["id"]) == [("a1", theirs["id"], False), ("a2", theirs["id"], True)]
    # and a1 still gets its own replay acknowledged as a duplicate
    assert await (await post(api, "a1", [theirs])).json() == {"accepted": 0, "duplicates": 1}


def row(slot: datetime, ok: bool, rid: str) -> dict:
    return {"result_id": rid, "check": "web", "slot": slot, "started": slot, "ok": ok, "latency_ms": None,
            "status_code": None, "error": None if ok else "connect", "detail": None, "received_at": slot}


@pytest.mark.parametrize("second_id", ["same", "other"])
async def test_two_replicas_racing_keep_exactly_one_vote(database_url, second_id) -> None:
    """Replica one has inserted and not committed yet when replica two inserts the same slot: the
    database's constraint makes two wait, then leave its row out (a duplicate if it is the same
    result, a conflict if it is another)."""
    await asyncio.to_thread(migrate.upgrade, database_url)
    one, two = make_state(database_url), make_state(database_url)
    await one.sync_config()
    s0 = base_slot()
    first = row(s0, False, "race-first-0001")
    racer = first if second_id == "same" else row(s0, True, "race-second-0002")
    try:
        async with one.sessionmaker() as s1, two.sessionmaker() as s2:
            assert (await store.insert_results(s1, "a1", [first], replica="one")).accepted == 1
            racing = asyncio.ensure_future(store.insert_results(s2, "a1", [racer], replica="two"))
            await asyncio.sleep(0.5)
            assert not racing.done()  # two waits for one's transaction
            await s1.commit()
            outcome = await asyncio.wait_for(racing, 30)
            await s2.commit()
        assert outcome.accepted == 0
        if second_id == "same":
            assert (outcome.duplicates, outcome.conflicts) == (1, ())
        else:
            assert outcome.duplicates == 0
            assert [(c["index"], c["id"], c["reason"]) for c in outcome.conflicts] == [(0, racer["result_id"], "conflict")]
            assert "stored result 'race-first-0001', failed" in outcome.conflicts[0]["error"]
        assert await stored(one) == [("a1", "race-first-0001", False)]
    finally:
        await one.engine.dispose()
        await two.engine.dispose()


async def test_the_database_itself_refuses_a_second_vote(database_url) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    state = make_state(database_url)
    await state.sync_config()
    s0 = base_slot()
    try:
        async with state.sessionmaker() as session:
            session.add(Result(agent_id="a1", **row(s0, False, "direct-first-01")))
            await session.commit()
            session.add(Result(agent_id="a1", **row(s0, True, "direct-second-02")))
            with pytest.raises(IntegrityError):
                await session.commit()
            await session.rollback()
            session.add(Result(agent_id="a2", **row(s0, True, "direct-first-01")))  # another agent's id: its own
            await session.commit()
            assert await session.scalar(select(func.count()).select_from(Result)) == 2
    finally:
        await state.engine.dispose()


async def test_the_agent_sets_aside_exactly_the_conflicting_result_and_replays_stay_duplicates(
        tmp_path, aiohttp_server) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")
    server = await aiohttp_server(create_app(state))
    metrics = AgentMetrics("a1")
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=50 * 1024**2, max_age=3600, metrics=metrics)
    client = CollectorClient(str(server.make_url("")), TOKENS["a1"], "a1", timeout=5)
    shipper = Shipper(client, spool, metrics, batch_size=50, flush_interval=0.05)
    await spool.open()
    await client.open()
    try:
        s0 = base_slot()
        failed = vote(s0, False)
        await spool.put(failed)
        assert await shipper.drain(retry=False)
        # a second vote for the failed slot between two good results, and the first one replayed
        rewrite, before, after = vote(s0, True), vote(s0 + timedelta(minutes=1), True), vote(s0 + timedelta(minutes=2), True)
        for item in (before, rewrite, failed, after):
            await spool.put(item)
        shipper.start()
        await wait_until(lambda: spool.count == 0, timeout=20)
        rejected = await spool.rejected()
        assert [(r["result"]["id"], r["status"]) for r in rejected] == [(rewrite["id"], 422)]
        assert "already voted in slot" in rejected[0]["error"]
        assert metrics.registry.get_sample_value("uptime_agent_rejected_results_total") == 1
        assert await stored(state) == [("a1", failed["id"], False), ("a1", before["id"], True),
                                       ("a1", after["id"], True)]
    finally:
        await shipper.stop(flush_timeout=0)
        await client.close()
        await spool.close()
