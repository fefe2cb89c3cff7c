"""Live equals offline with degraded results: the live evaluator, fed degraded, failed and clean
votes in shuffled batches with ticks between them, stores exactly the windows and the runs of
non-UP rounds (DEGRADED among them) that an offline evaluation of the same results as JSON Lines
finds, under a policy that counts degraded rounds as down (numezis-business) and under one that
does not; and the month report from the database equals the offline one."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collector import store
from collector.config import parse_config
from collector.migrate import upgrade_async
from collector.reporting import report_from_db
from collector.rules.model import Verdict, iso
from collector.rules.offline import evaluate_offline, evaluate_windows, read_results
from collector.rules.rounds import ObservationIndex
from collector.rules.runs import runs_of
from collector.service import CollectorState

UTC = timezone.utc
AGENTS = ("a1", "a2", "a3")
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)

# per slot: each agent's vote, "ok" / "slow" (ok but degraded) / "fail"
STATES = {
    "up": ("ok", "ok", "ok"),
    "slow": ("slow", "slow", "slow"),
    "slow2": ("slow", "slow", "ok"),     # majority slow: DEGRADED
    "slow1": ("slow", "ok", "ok"),       # one slow agent: UP
    "mixed": ("fail", "slow", "ok"),     # UP by the quorum, 2 of 3 no better than slow: DEGRADED
    "down": ("fail", "fail", "fail"),
}
HISTORY = (["up"] * 3 + ["slow"] * 4 + ["up"] * 2 + ["slow2", "mixed", "down", "down", "slow"] + ["up"] * 2
           + ["slow1"] * 3 + ["down"] + ["slow2"] * 2 + ["up"] * 3)


def make_state(database_url: str) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s",
                    "outage": {"quorum": "majority", "min_duration": "0s"}}],
        # Numezis SaaS SLA §1: degraded rounds are downtime; the check's own rule does not count them
        "policies": [{"name": "numezis", "preset": "numezis-business", "components": ["web"]}],
    }, "test"))


def lines() -> list[str]:
    out = []
    for i, what in enumerate(HISTORY):
        slot = BASE + timedelta(minutes=i)
        for agent, vote in zip(AGENTS, STATES[what]):
            out.append(json.dumps({"agent": agent, "check": "web", "ts": iso(slot), "ok": vote != "fail",
                                   "degraded": vote == "slow", "error": "timeout" if vote == "fail" else None}))
    return out


def _merged(runs) -> list[tuple[datetime, datetime, str]]:
    """Runs as (start, end, verdict), abutting runs of one verdict joined (storage may split a
    run where two judged ranges meet)."""
    out: list[tuple[datetime, datetime, str]] = []
    for start, end, verdict in sorted((r.start, r.end, getattr(r.verdict, "value", r.verdict)) for r in runs):
        if out and out[-1][1] == start and out[-1][2] == verdict:
            out[-1] = (out[-1][0], end, verdict)
        else:
            out.append((start, end, verdict))
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_live_windows_and_runs_equal_offline_with_degraded_results(database_url, seed) -> None:
    rnd = random.Random(seed)
    observations = read_results(lines())
    state = make_state(database_url)
    try:
        await upgrade_async(database_url)
        await state.sync_config()
        pending = {a: [] for a in AGENTS}
        for o in observations:
            pending[o.agent].append({"result_id": uuid.uuid4().hex, "check": o.check, "slot": o.ts, "started": o.ts,
                                     "ok": o.ok, "latency_ms": None, "status_code": None,
                                     "error": None if o.ok else "timeout", "detail": None, "received_at": BASE,
                                     "degraded": o.degraded, "extra": None})
        for rows in pending.values():
            rnd.shuffle(rows)
        now = BASE + timedelta(minutes=5)
        while any(pending.values()):
            agent = rnd.choice([a for a, left in pending.items() if left])
            take = rnd.randint(1, 9)
            batch, pending[agent] = pending[agent][:take], pending[agent][take:]
            async with state.sessionmaker() as session:
                await store.insert_results(session, agent, batch, replica=state.instance_id)
                await session.commit()
            state.note_results(agent, batch)
            if rnd.random() < 0.5:
                await state.evaluator.tick(now)
            now += timedelta(seconds=rnd.choice([0, 30, 60]))
        now = BASE + timedelta(minutes=len(HISTORY) + 30)
        for _ in range(100):
            await state.evaluator.tick(now)
            if not any(lp.dirty for lp in state.evaluator.policies):
                break

        found = {}
        for lp in state.evaluator.policies:
            settled = state.evaluator.settled_until(lp, now)
            index = ObservationIndex(lp.policy, observations, expected_by_component=lp.expected_by_component)
            rounds, windows = evaluate_windows(lp.policy, index, BASE, settled, now=now)
            async with state.sessionmaker() as session:
                stored = [(w.start, w.end) for w in await store.load_windows(session, lp.name)]
                runs = (await store.runs_since(session, [lp.name], BASE)).get(lp.name, [])
            assert stored == [(w.start, w.end) for w in windows], lp.name
            offline_runs = [r for r in runs_of(rounds, settled) if r.end > BASE]
            assert _merged(runs) == _merged(offline_runs), lp.name
            found[lp.name] = stored
            assert any(v == Verdict.DEGRADED.value for _s, _e, v in _merged(runs)), lp.name

        minute = lambda i: BASE + timedelta(minutes=i)  # noqa: E731
        # the check's own rule: only the failed rounds are outages
        assert found["web"] == [(minute(11), minute(13)), (minute(19), minute(20))]
        # numezis: degraded rounds are downtime too, so the runs around the failures join them
        assert found["numezis"] == [(minute(3), minute(7)), (minute(9), minute(14)), (minute(19), minute(22))]

        lp = next(p for p in state.evaluator.policies if p.name == "numezis")
        period = BASE.astimezone(lp.policy.tz).strftime("%Y-%m")
        async with state.sessionmaker() as session:
            live = await report_from_db(session, lp.policy, period, now=now,
                                        expected_by_component=lp.expected_by_component)
        offline = evaluate_offline(lp.policy, observations, period, now=now,
                                   expected_by_component=lp.expected_by_component)
        assert live == offline
        assert live["rounds"]["degraded"] == 9 and live["degraded_minutes"] == 9
        assert live["downtime_minutes"] == 12
    finally:
        await state.engine.dispose()
