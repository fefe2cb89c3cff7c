"""Fault injection on real network hosts: `kill -9` of agents and of the collector while results
are being shipped and ingested (tests/netns.py builds the hosts; the programs are the real ones).

What "nothing lost" means here, exactly:
* every result the collector acknowledged (answered 200 for, as the recording proxy in front of
  it saw) is stored, and once the spools are drained every result ever sent is stored;
* no (agent, check, slot) is stored twice;
* for every agent and check, the stored slots run without a gap from the first to the last,
  except, for an agent that was killed, the slots it could not probe: those whose probe had not
  finished when it died (slot start later than one second before the kill) up to its restart.
  A result that was spooled and then lost would show up as a gap outside those spans.
"""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import netns
from netns import COLLECTOR_IP, Fleet, by_key, http_check, icmp_check, parse_ts, slot_of, utcnow

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
STEP = timedelta(seconds=INTERVAL)
CHECKS = ("web", "ping")
AGENTS = ("us-east", "us-west", "eu-west")


@pytest.fixture
def lab():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.Lab(AGENTS) as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return netns.TerminalReport(capsys)


def fleet_checks() -> list[dict]:
    return [http_check(interval=INTERVAL), icmp_check(interval=INTERVAL)]


def continuity_problems(rows, agents, until: datetime, downtime: dict[str, list[tuple[float, float]]],
                        since: datetime | None = None) -> list[str]:
    """Gaps in each (agent, check)'s stored slots that no downtime of that agent explains, and
    slots stored more than once. `downtime[agent]` lists (killed at, running again at) unix times."""
    problems = []
    keyed = by_key(rows)
    for (agent, check, slot), found in keyed.items():
        if len(found) > 1:
            problems.append(f"{agent} {check} {slot}: stored {len(found)} times")
    for agent in agents:
        for check in CHECKS:
            slots = sorted(parse_ts(s) for (a, c, s) in keyed if a == agent and c == check)
            if not slots:
                problems.append(f"{agent} {check}: nothing stored")
                continue
            t = slots[0] if since is None else max(slots[0], since)
            present = set(slots)
            while t <= until:
                if t not in present:
                    ts = t.timestamp()
                    explained = any(killed - 1.0 < ts < running for killed, running in downtime.get(agent, ()))
                    if not explained:
                        problems.append(f"{agent} {check} {t.isoformat()}: missing, the agent was running")
                t += STEP
    return problems


async def test_agent_killed_in_the_middle_of_shipping_loses_and_doubles_nothing(lab, tmp_path: Path, report) -> None:
    """us-east builds a backlog while cut off from the collector, then ships it two results per
    POST; three times it is killed with SIGKILL right after the collector acknowledged one of
    those POSTs (so mid-replay, between an acknowledgement and the next batch), and restarted on
    the same spool."""
    started = time.monotonic()
    victim = "us-east"
    fleet = Fleet(lab, tmp_path, fleet_checks(), agent_extra={"collector": {"batch_size": 2}})
    downtime: list[tuple[float, float]] = []
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), INTERVAL) + STEP
        for cycle in range(3):
            lab.partition(victim, COLLECTOR_IP)
            await asyncio.sleep(4 * INTERVAL)  # a backlog of about 8 results
            backlog = fleet.spool_count(victim)
            assert backlog >= 6, backlog
            healed = time.time()
            lab.heal(victim, COLLECTOR_IP)
            await fleet.wait_acks(2, healed, agent=victim, timeout=40)
            killed = time.time()
            fleet.kill(victim)
            left = fleet.spool_count(victim)
            fleet.start_agent(victim)
            ready = (await fleet.wait_agents([victim]))[victim]
            downtime.append((killed, ready))
            print(f"cycle {cycle}: backlog {backlog}, killed mid-replay with {left} still spooled, "
                  f"down {ready - killed:.1f}s")
        await asyncio.sleep(2 * INTERVAL)
        end = slot_of(utcnow(), INTERVAL) - STEP
        await fleet.wait_drained(timeout=60)
        rows = fleet.stored_rows()
        problems = continuity_problems(rows, fleet.agents, end, {victim: downtime}, since=t0)
        assert not problems, "\n".join(problems[:30])
        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line("agent kill -9 mid-shipping x3", time.monotonic() - started,
                            f" agent_restarts={fleet.restarts[victim] - 1}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()


async def test_collector_killed_during_ingest_keeps_every_acknowledged_result(lab, tmp_path: Path, report) -> None:
    """All three agents are cut off from the collector for five rounds, then replay their
    backlogs two results per POST; three times the collector is killed with SIGKILL right after
    it acknowledged a POST (other POSTs are in flight), and restarted."""
    started = time.monotonic()
    fleet = Fleet(lab, tmp_path, fleet_checks(), agent_extra={"collector": {"batch_size": 2}})
    kills = []
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), INTERVAL) + STEP
        for cycle in range(3):
            for agent in fleet.agents:
                lab.partition(agent, COLLECTOR_IP)
            await asyncio.sleep(5 * INTERVAL)
            healed = time.time()
            for agent in fleet.agents:
                lab.heal(agent, COLLECTOR_IP)
            await fleet.wait_acks(3, healed, timeout=60)
            in_flight = sum(fleet.spool_count(a) for a in fleet.agents)
            fleet.kill("collector")
            kills.append(time.time())
            acked_before = {i for p in fleet.posts() if p["status"] == 200 for i in p["ids"]}
            fleet.start_collector()
            await fleet.wait_collector()
            stored_now = {r[0] for r in fleet.stored_rows()}
            missing = acked_before - stored_now
            assert not missing, f"cycle {cycle}: {len(missing)} acknowledged results not stored after the restart"
            print(f"cycle {cycle}: killed with {in_flight} results spooled on the agents; "
                  f"{len(acked_before)} acknowledged so far, all stored")
        await asyncio.sleep(2 * INTERVAL)
        end = slot_of(utcnow(), INTERVAL) - STEP
        await fleet.wait_drained(timeout=90)
        rows = fleet.stored_rows()
        problems = continuity_problems(rows, fleet.agents, end, {}, since=t0)
        assert not problems, "\n".join(problems[:30])
        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line("collector kill -9 during ingest x3", time.monotonic() - started,
                            f" collector_restarts={fleet.restarts['collector'] - 1}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()


async def test_two_dozen_kill_cycles_of_agent_and_collector(lab, tmp_path: Path, report) -> None:
    """24 cycles, each: SIGKILL the collector and us-east at random moments (one cycle in two
    while the collector is still starting, the other once it is ingesting again), restart both.
    us-west and eu-west run throughout. After the last restart: every acknowledged result is
    stored exactly once, nothing an agent produced is missing, and us-east still probes, spools
    and ships new results."""
    started = time.monotonic()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    victim = "us-east"
    fleet = Fleet(lab, tmp_path, fleet_checks(), agent_extra={"collector": {"batch_size": 3}})
    downtime: list[tuple[float, float]] = []
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), INTERVAL) + STEP
        down_since: float | None = None  # the victim is down (killed, not yet seen running) since
        for cycle in range(24):
            restarted = time.time()
            if cycle % 2:
                await asyncio.sleep(rng.uniform(0.1, 1.5))  # collector starting up, migrating, ...
            else:
                await fleet.wait_acks(1, restarted, timeout=60)  # ... or ingesting again
                await asyncio.sleep(rng.uniform(0, 0.5))
            fleet.kill("collector")
            await asyncio.sleep(rng.uniform(0, 0.3))
            if down_since is None:
                down_since = time.time()
            fleet.kill(victim)
            fleet.start_collector()
            fleet.start_agent(victim)
            # Give the agent a random 0.5-3 s: often it is running again (checks scheduled) by
            # then, sometimes it is killed again while still starting.
            try:
                ready = (await asyncio.wait_for(fleet.wait_agents([victim]), rng.uniform(0.5, 3.0)))[victim]
                downtime.append((down_since, ready))
                down_since = None
            except (asyncio.TimeoutError, AssertionError):
                pass
        await fleet.wait_collector()
        ready = (await fleet.wait_agents([victim]))[victim]
        if down_since is not None:
            downtime.append((down_since, ready))
        last_restart = ready
        await asyncio.sleep(3 * INTERVAL)
        end = slot_of(utcnow(), INTERVAL) - STEP
        await fleet.wait_drained(timeout=120)
        rows = fleet.stored_rows()
        problems = continuity_problems(rows, fleet.agents, end, {victim: downtime}, since=t0)
        assert not problems, f"seed {seed}:\n" + "\n".join(problems[:30])
        new = [r for r in rows if r[1] == victim and parse_ts(r[3]).timestamp() > last_restart]
        assert len(new) >= 2 * len(CHECKS), f"after the last restart {victim} stored only {len(new)} results"
        spool = tmp_path / f"spool-{victim}.sqlite"
        import sqlite3

        with sqlite3.connect(spool) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with sqlite3.connect(fleet.db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line("24 kill -9 cycles of agent and collector", time.monotonic() - started,
                            f" seed={seed} collector_restarts={fleet.restarts['collector'] - 1} "
                            f"agent_restarts={fleet.restarts[victim] - 1} new_after_last_restart={len(new)}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()
