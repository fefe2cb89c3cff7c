"""The evaluator judges the newest rounds of many policies in one transaction. Whatever each
policy's history (an outage still open, one that just ended, a long one, flapping, missing
agents, no evidence at all), what it stores — windows, runs of non-UP rounds, progress — and the
events it raises must be exactly those of judging each policy on its own, tick after tick."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, select

from collector.config import parse_config
from collector.db import OutageWindow, PolicyProgress, Result, RoundRun
from collector.migrate import upgrade_async
from collector.service import CollectorState
from protocol.timestamps import slot_of

AGENTS = ("a1", "a2", "a3")
MIN = timedelta(minutes=1)
NOW = slot_of(datetime.now(timezone.utc), 60) - timedelta(minutes=30) + timedelta(seconds=20)


def failing(check: str, slot: datetime, agent: str) -> bool | None:
    """The history of each check: True when the agent saw it fail, None when it sent nothing."""
    ago = (NOW - slot) // MIN
    return {
        "steady": False,                               # up throughout
        "open": ago < 10,                              # an outage still going on
        "ended": 15 <= ago < 25,                       # an outage that ended ten minutes ago
        "brief": ago < 2,                              # failing since two minutes, and on
        "short-handed": None if agent == "a3" else ago < 20,  # two of three fail, one silent: unknown
        "long": ago < 8 * 60,                          # open for eight hours
        "flapping": ago % 2 == 0,
        "silent": None,
        "new": False if ago < 3 else None,             # evidence only since three minutes ago
    }[check]


CHECKS = ("steady", "open", "ended", "brief", "short-handed", "long", "flapping", "silent", "new")


async def make_state(path: Path) -> CollectorState:
    http = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}
    url = f"sqlite+aiosqlite:///{path}"
    config = parse_config({
        "database_url": url, "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": c, **http, "outage": {"quorum": "all", "min_duration": "3m"}} for c in CHECKS],
    }, "test")
    await upgrade_async(url)
    state = CollectorState.create(config)
    await state.sync_config()
    return state


async def deliver(state: CollectorState, slots: list[datetime], recover: bool = False) -> None:
    rows = []
    for check in CHECKS:
        for slot in slots:
            for agent in AGENTS:
                down = failing(check, slot, agent)
                if down is None:
                    continue
                if recover and check == "open":
                    down = False
                rows.append(dict(result_id=uuid.uuid4().hex, agent_id=agent, check=check, slot=slot,
                                 started=slot, ok=not down, received_at=NOW, degraded=False))
    async with state.sessionmaker() as session:
        await session.execute(insert(Result), rows)
        await session.commit()
    for check in CHECKS:  # as ingest does after its commit
        state.evaluator.mark_dirty(check, slots[0], slots[-1])


async def stored(state: CollectorState):
    async with state.sessionmaker() as session:
        windows = sorted((w.policy, w.start, w.end) for w in (await session.scalars(select(OutageWindow))).all())
        runs = sorted((r.policy, r.start, r.end, r.verdict) for r in (await session.scalars(select(RoundRun))).all())
        progress = sorted((p.policy, p.judged_until) for p in (await session.scalars(select(PolicyProgress))).all())
    return windows, runs, progress


async def test_batched_tails_store_what_one_policy_at_a_time_stores(tmp_path: Path):
    batched, single = await make_state(tmp_path / "batched.db"), await make_state(tmp_path / "single.db")
    single.evaluator.batch_tails = False
    history = [slot_of(NOW, 60) - m * MIN for m in range(9 * 60, 0, -1)]
    try:
        for state in (batched, single):
            await deliver(state, history)
        now = NOW
        for minute in range(4):
            if minute:  # the next slot arrives; `open` recovers from the second minute on
                for state in (batched, single):
                    await deliver(state, [slot_of(now, 60) - MIN], recover=minute >= 2)
            got = [await state.evaluator.tick(now) for state in (batched, single)]
            assert [(e.kind, e.policy, e.start, e.end) for e in got[0]] == \
                   [(e.kind, e.policy, e.start, e.end) for e in got[1]], f"minute {minute}"
            assert await stored(batched) == await stored(single), f"minute {minute}"
            now += MIN
        windows, runs, progress = await stored(batched)
        # the histories were judged at all: the outages are there, the silent check has none
        by_policy = {p for p, _, _ in windows}
        assert {"ended", "long", "open"} <= by_policy
        assert "silent" not in by_policy and "steady" not in by_policy
        assert any(p == "open" and end is not None for p, _, end in windows)  # it recovered
        assert any(p == "short-handed" and verdict == "unknown" for p, _, _, verdict in runs)
        assert {p for p, _ in progress} >= set(CHECKS) - {"silent"}
    finally:
        for state in (batched, single):
            await state.engine.dispose()
