"""Fault injection on real network hosts: `kill -9` of agents and of the collector while results
are being shipped and ingested (tests/netlab/ builds the hosts; the programs are the real ones).

What "nothing lost" means here, exactly:
* every result the collector acknowledged (answered 200 for, as the recording proxy in front of
  it saw) is stored, and once the spools are drained every result ever sent is stored;
* every result an agent made durable, by its own record, is stored exactly once, as that
  agent's (check, slot): its spool is read right after each kill -9 (what the dead agent held)
  and when the agents have stopped, and the proxy's log names every result sent; none may be
  missing, doubled or set aside, however long the agent was down (`Fleet.accounting_problems`);
* no (agent, check, slot) is stored twice;
* for every agent and check, the stored slots run without a gap from the first slot it should
  have probed (the first after the fleet was up) to the last, except, for an agent that was
  killed, the slots it could not probe: those whose probe had not finished when it died (slot
  start later than one second before the kill) up to its restart. Those are results the agent
  never recorded: anything it had spooled is accounted for by id, above.
Each scenario also asserts that its fault was really hit: results still spooled and not yet
acknowledged when the agent died, results not yet acknowledged when the collector died (summed
over the repetitions, so that one lucky moment does not fail the run).
"""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

import pytest

from netlab.fleet import Fleet, TerminalReport, by_key, http_check, icmp_check, parse_ts, slot_of, utcnow
from netlab.lab import COLLECTOR_IP, Lab, require_lab

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
STEP = timedelta(seconds=INTERVAL)
CHECKS = ("web", "ping")
AGENTS = ("us-east", "us-west", "eu-west")
# the 24 kill cycles run under load: 20 checks at 1 s on each of the three agents (60 results/s)
CHURN_INTERVAL = 1.0
CHURN_CHECKS = tuple(f"web{i}" for i in range(10)) + tuple(f"ping{i}" for i in range(10))


@pytest.fixture
def lab():
    require_lab()  # skips without root, ip or iptables; fails instead under CI
    with Lab(AGENTS) as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return TerminalReport(capsys)


def fleet_checks() -> list[dict]:
    return [http_check(interval=INTERVAL), icmp_check(interval=INTERVAL)]


def continuity_problems(rows, agents, until: datetime, downtime: dict[str, list[tuple[float, float]]],
                        since: datetime | None = None, *, checks: Sequence[str] = CHECKS,
                        interval: float = INTERVAL, excused: list[str] | None = None) -> list[str]:
    """Gaps in each (agent, check)'s stored slots that no downtime of that agent explains, and
    slots stored more than once. `downtime[agent]` lists (killed at, running again at) unix times.
    Slots are checked from `since` (the first slot every agent should have probed; a loss of
    everything before the first stored slot is a gap too) or, without it, from the first stored.
    The missing slots a downtime explains are appended to `excused`: probes the agent never
    finished, so never recorded (what it did record, `Fleet.accounting_problems` checks by id)."""
    problems = []
    step = timedelta(seconds=interval)
    keyed = by_key(rows)
    for (agent, check, slot), found in keyed.items():
        if len(found) > 1:
            problems.append(f"{agent} {check} {slot}: stored {len(found)} times")
    for agent in agents:
        for check in checks:
            slots = sorted(parse_ts(s) for (a, c, s) in keyed if a == agent and c == check)
            if not slots:
                problems.append(f"{agent} {check}: nothing stored")
                continue
            t = slots[0] if since is None else since
            present = set(slots)
            while t <= until:
                if t not in present:
                    ts = t.timestamp()
                    explained = any(killed - 1.0 < ts < running for killed, running in downtime.get(agent, ()))
                    if not explained:
                        problems.append(f"{agent} {check} {t.isoformat()}: missing, the agent was running")
                    elif excused is not None:
                        excused.append(f"{agent} {check} {t.isoformat()}")
                t += step
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
    left, unacked = [], []
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
            held = fleet.record_spool(victim)  # what the dead agent had made durable
            pending = set(held) - fleet.acked_ids()
            left.append(len(held))
            unacked.append(len(pending))
            fleet.start_agent(victim)
            ready = (await fleet.wait_agents([victim]))[victim]
            downtime.append((killed, ready))
            print(f"cycle {cycle}: backlog {backlog}, killed mid-replay with {len(held)} still spooled "
                  f"({len(pending)} never acknowledged), down {ready - killed:.1f}s")
        # the fault was hit: at some kill the agent still held results the collector had not acknowledged
        assert sum(unacked) > 0, f"every kill came after the replay had been acknowledged: spooled {left}"
        await asyncio.sleep(2 * INTERVAL)
        end = slot_of(utcnow(), INTERVAL) - STEP
        await fleet.wait_drained(timeout=60)
        rows = fleet.stored_rows()
        unprobed: list[str] = []
        problems = continuity_problems(rows, fleet.agents, end, {victim: downtime}, since=t0, excused=unprobed)
        assert not problems, "\n".join(problems[:30])
        final = fleet.final_rows()  # agents stopped: nothing in flight
        problems = fleet.accounting_problems(final)
        assert not problems, "\n".join(problems[:30])
        figures = fleet.figures(final)
        report(figures.line("agent kill -9 mid-shipping x3", time.monotonic() - started,
                            f" agent_restarts={fleet.restarts[victim] - 1} unprobed_while_down={len(unprobed)} "
                            f"spooled_at_kills={left} "
                            f"unacknowledged_at_kills={unacked} recorded_at_kills={len(fleet.recorded[victim])}"))
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
    in_flight, interrupted = [], []
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
            spooled = {i for a in fleet.agents for i in fleet.record_spool(a)}  # just before the kill
            killing = time.time()
            fleet.kill("collector")
            kills.append(time.time())
            acked_before = fleet.acked_ids()
            # results the agents held that the dying collector had not acknowledged: in flight
            in_flight.append(len(spooled - acked_before))
            fleet.start_collector()
            await fleet.wait_collector()
            stored_now = {r[0] for r in fleet.stored_rows()}
            missing = acked_before - stored_now
            assert not missing, f"cycle {cycle}: {len(missing)} acknowledged results not stored after the restart"
            # POSTs the proxy had passed on before the kill and that got no 200: cut off by it
            interrupted.append(sum(1 for p in fleet.posts() if healed <= p["t"] < killing and p["status"] != 200))
            print(f"cycle {cycle}: killed with {len(spooled)} results spooled on the agents, {in_flight[-1]} of "
                  f"them not acknowledged, {interrupted[-1]} POSTs cut off; {len(acked_before)} acknowledged so far, "
                  f"all stored")
        # the fault was hit: at some kill results were still on their way to the collector
        assert sum(in_flight) > 0, f"every kill came after the backlogs had been acknowledged: {in_flight}"
        await asyncio.sleep(2 * INTERVAL)
        end = slot_of(utcnow(), INTERVAL) - STEP
        await fleet.wait_drained(timeout=90)
        rows = fleet.stored_rows()
        problems = continuity_problems(rows, fleet.agents, end, {}, since=t0)
        assert not problems, "\n".join(problems[:30])
        final = fleet.final_rows()  # agents stopped: nothing in flight
        problems = fleet.accounting_problems(final)
        assert not problems, "\n".join(problems[:30])
        figures = fleet.figures(final)
        report(figures.line("collector kill -9 during ingest x3", time.monotonic() - started,
                            f" collector_restarts={fleet.restarts['collector'] - 1} "
                            f"unacknowledged_at_kills={in_flight} posts_cut_off={interrupted}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()


def churn_checks() -> list[dict]:
    return [http_check(name, interval=CHURN_INTERVAL, timeout="800ms") if name.startswith("web")
            else icmp_check(name, interval=CHURN_INTERVAL, timeout="500ms") for name in CHURN_CHECKS]


async def test_two_dozen_kill_cycles_of_agent_and_collector(lab, tmp_path: Path, report) -> None:
    """Under load (20 checks at 1 s on each of three agents: 60 results a second), 24 cycles,
    each: SIGKILL the collector and us-east at random moments (one cycle in two while the
    collector is still starting, the other once it is ingesting again), restart both. us-west
    and eu-west run throughout. After the last restart: every result an agent made durable
    (in us-east's spool right after each kill, sent, or spooled at the end) is stored exactly
    once, no slot is missing outside us-east's downtime, and us-east still probes, spools and
    ships new results."""
    started = time.monotonic()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    victim = "us-east"
    step = timedelta(seconds=CHURN_INTERVAL)
    fleet = Fleet(lab, tmp_path, churn_checks(), agent_extra={"collector": {"batch_size": 25}})
    downtime: list[tuple[float, float]] = []
    held_at_kills: list[int] = []
    unacked_at_kills: list[int] = []
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), CHURN_INTERVAL) + step
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
            held = fleet.record_spool(victim)  # what the dead agent had made durable
            held_at_kills.append(len(held))
            unacked_at_kills.append(len(set(held) - fleet.acked_ids()))
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
        await asyncio.sleep(3)
        end = slot_of(utcnow(), CHURN_INTERVAL) - step
        await fleet.wait_drained(timeout=120)
        rows = fleet.stored_rows()
        unprobed: list[str] = []
        problems = continuity_problems(rows, fleet.agents, end, {victim: downtime}, since=t0,
                                       checks=CHURN_CHECKS, interval=CHURN_INTERVAL, excused=unprobed)
        assert not problems, f"seed {seed}:\n" + "\n".join(problems[:30])
        new = [r for r in rows if r[1] == victim and parse_ts(r[3]).timestamp() > last_restart]
        assert len(new) >= 2 * len(CHURN_CHECKS), f"after the last restart {victim} stored only {len(new)} results"
        # the fault was hit: the kills found results spooled and not yet acknowledged
        assert sum(unacked_at_kills) > 0, f"us-east held nothing unacknowledged at any kill: {held_at_kills}"
        spool = tmp_path / f"spool-{victim}.sqlite"
        import sqlite3

        with sqlite3.connect(spool) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with sqlite3.connect(fleet.db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        final = fleet.final_rows()  # agents stopped: nothing in flight
        problems = fleet.accounting_problems(final)
        assert not problems, f"seed {seed}:\n" + "\n".join(problems[:30])
        figures = fleet.figures(final)
        report(figures.line("24 kill -9 cycles of agent and collector", time.monotonic() - started,
                            f" seed={seed} checks={len(CHURN_CHECKS)}x{CHURN_INTERVAL:g}s agents={len(fleet.agents)} "
                            f"collector_restarts={fleet.restarts['collector'] - 1} "
                            f"agent_restarts={fleet.restarts[victim] - 1} unprobed_while_down={len(unprobed)} "
                            f"spooled_at_kills={sum(held_at_kills)} unacknowledged_at_kills={sum(unacked_at_kills)} "
                            f"recorded_at_kills={len(fleet.recorded[victim])} new_after_last_restart={len(new)}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()
