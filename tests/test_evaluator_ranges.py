"""The live evaluator judges only the ranges that results touched (and the tail), yet its stored
windows must always equal an offline evaluation of everything stored: whatever the order and
lateness of delivery, whichever replica stored a batch, however the per-tick budget splits the
work. Hypothesis draws the histories; each example runs on a real SQLite database."""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import evaluator as evaluator_module
from collector import store
from collector.config import parse_config
from collector.migrate import upgrade_async
from collector.rules.model import Observation
from collector.rules.rounds import evaluate_rounds
from collector.rules.windows import find_windows
from collector.service import CollectorState

INTERVAL = 60
AGENTS = ("a1", "a2", "a3")
BASE = datetime(2026, 11, 2, tzinfo=timezone.utc)


def make_state(path: Path, quorum: str, min_duration: str) -> CollectorState:
    config = parse_config({
        "database_url": f"sqlite+aiosqlite:///{path}",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": "web", "type": "http", "interval": INTERVAL, "url": "http://127.0.0.1:1/",
                    "timeout": "5s", "outage": {"quorum": quorum, "min_duration": min_duration}}],
    }, "test")
    return CollectorState.create(config)


def row(agent: str, slot: datetime, ok: bool, received: datetime) -> dict:
    return {"result_id": uuid.uuid4().hex, "check": "web", "slot": slot, "started": slot, "ok": ok,
            "latency_ms": None, "status_code": None, "error": None if ok else "connect", "detail": None,
            "received_at": received}


# A history: per slot, which agents failed; long stretches of all-failed rounds are likely, so
# that windows, runs crossing batch edges and runs just short of the rule all occur.
slot_states = st.sampled_from(["up", "up", "down", "down", "down", "a1-down", "missing-a2", "gap"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(st.lists(slot_states, min_size=1, max_size=12), min_size=1, max_size=14),
    old_hours=st.integers(min_value=0, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    budget=st.sampled_from([3, 17, 50_000]),
    min_duration=st.sampled_from(["0s", "2m", "5m"]),
    # majority: one agent's early failure fails a round that later reports turn UP, so stored
    # windows shrink, split and vanish; all: a round once FAILED stays FAILED
    quorum=st.sampled_from(["all", "majority"]),
)
def test_live_windows_equal_offline_whatever_the_delivery(history, old_hours, seed, budget, min_duration, quorum) -> None:
    # runs of one state each, so that long outages are drawn as often as short ones
    states = [s for run in history for s in run for _ in range(1 + len(run) % 4)]
    asyncio.run(_scenario(states, old_hours, random.Random(seed), budget, quorum, min_duration))


async def _scenario(states: list[str], old_hours: int, rnd: random.Random, budget: int, quorum: str,
                    min_duration: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = make_state(Path(tmp) / "c.sqlite", quorum, min_duration)
        original = evaluator_module.ROUNDS_PER_TICK
        evaluator_module.ROUNDS_PER_TICK = budget
        try:
            await upgrade_async(state.config.database_url)
            await state.sync_config()
            await _deliver(state, states, old_hours, rnd)
        finally:
            evaluator_module.ROUNDS_PER_TICK = original
            await state.engine.dispose()


async def _deliver(state: CollectorState, states: list[str], old_hours: int, rnd: random.Random) -> None:
    # The history starts `old_hours` before the first tick: replayed from far back, or live.
    first_slot = BASE - timedelta(hours=old_hours)
    observations: list[Observation] = []
    pending: dict[str, list[dict]] = {a: [] for a in AGENTS}
    for i, what in enumerate(states):
        slot = first_slot + timedelta(seconds=INTERVAL * i)
        for agent in AGENTS:
            if what == "gap" or (what == "missing-a2" and agent == "a2"):
                continue
            ok = what == "up" or (what == "a1-down" and agent != "a1") or (what == "missing-a2")
            pending[agent].append(row(agent, slot, ok, BASE))
            observations.append(Observation(agent=agent, check="web", ts=slot, ok=ok))
    for agent_rows in pending.values():
        rnd.shuffle(agent_rows)
    last_slot = first_slot + timedelta(seconds=INTERVAL * len(states))
    now = max(BASE, first_slot + timedelta(seconds=INTERVAL))
    ev = state.evaluator
    while any(pending.values()):
        agent = rnd.choice([a for a, left in pending.items() if left])
        take = rnd.randint(1, 12)
        batch, pending[agent] = pending[agent][:take], pending[agent][take:]
        for r in batch:
            r["received_at"] = now
        # a batch stored by this replica (marked directly) or by another one (found by its marks)
        replica = state.instance_id if rnd.random() < 0.6 else "other-replica"
        async with state.sessionmaker() as session:
            await store.insert_results(session, agent, batch, replica=replica)
            await session.commit()
        if replica == state.instance_id:
            state.note_results(agent, batch)
        if rnd.random() < 0.5:
            await ev.scan_received(now)
            await ev.tick(now)
        now += timedelta(seconds=rnd.choice([0, 7, INTERVAL, 5 * INTERVAL]))
    # long after the last slot: every round is settled; tick until nothing is left to judge
    now = max(now, last_slot) + timedelta(minutes=30)
    await ev.scan_received(now)
    for _ in range(10_000):
        await ev.tick(now)
        if not any(lp.dirty for lp in ev.policies):
            break
    await ev.tick(now)

    lp = ev.policies[0]
    settled = ev.settled_until(lp, now)
    rounds = evaluate_rounds(lp.policy, observations, first_slot, settled, expected_by_component=lp.expected_by_component)
    expected = [(w.start, w.end) for w in find_windows(lp.policy, rounds, open_tail=True)]
    async with state.sessionmaker() as session:
        stored = [(w.start, w.end) for w in await store.load_windows(session, lp.name)]
    assert stored == expected, f"states={states}"


async def test_a_late_success_inside_an_old_window_splits_it(tmp_path: Path) -> None:
    """A replayed history far behind the tail: a1's failures arrive first and make a window; the
    other agents' reports of one round in its middle arrive later and split it in two."""
    state = make_state(tmp_path / "c.sqlite", "majority", "0s")
    try:
        await upgrade_async(state.config.database_url)
        await state.sync_config()
        ev = state.evaluator
        first = BASE - timedelta(hours=10)
        slots = [first + timedelta(seconds=INTERVAL * i) for i in range(10)]

        async def ship(agent: str, rows: list[dict]) -> None:
            async with state.sessionmaker() as session:
                await store.insert_results(session, agent, rows, replica=state.instance_id)
                await session.commit()
            state.note_results(agent, rows)
            await ev.tick(BASE)

        await ship("a1", [row("a1", s, False, BASE) for s in slots])
        await ship("a2", [row("a2", slots[5], True, BASE)])
        await ship("a3", [row("a3", slots[5], True, BASE)])
        async with state.sessionmaker() as session:
            stored = [(w.start, w.end) for w in await store.load_windows(session, "web")]
        assert stored == [(slots[0], slots[5]), (slots[6], slots[9] + timedelta(seconds=INTERVAL))]
    finally:
        await state.engine.dispose()
