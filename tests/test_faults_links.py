"""Fault injection on real network hosts: links cut between agents and the target, and between
agents and the collector (tests/netlab/ builds the hosts; the programs are the real ones).

Every scenario prints its figures: results produced, sent, acknowledged, stored, duplicates, lost.
"""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from netlab.fleet import Fleet, TerminalReport, by_key, http_check, icmp_check, slot_of, sleep_until, utcnow, z
from netlab.lab import COLLECTOR_IP, TARGET_IP, Lab, require_lab

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
STEP = timedelta(seconds=INTERVAL)
MID = timedelta(seconds=INTERVAL / 2)  # act mid-slot: that slot's probes are done, the next not begun


@pytest.fixture
def lab():
    require_lab()  # skips without root, ip or iptables; fails instead under CI
    with Lab() as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return TerminalReport(capsys)


def checks(min_duration: str = "6s") -> list[dict]:
    outage = {"quorum": "all", "min_duration": min_duration}
    return [http_check(interval=INTERVAL, outage=outage), icmp_check(interval=INTERVAL, outage=outage)]


def expect_rows(fleet: Fleet, rows, slots, failing: dict[str, set]) -> None:
    """Exactly one stored result per (agent, check, slot) in `slots`, failed exactly where
    `failing[agent]` says (a set of slot strings), with the reason a cut link gives."""
    keyed = by_key(rows)
    problems = []
    for agent in fleet.agents:
        for check in ("web", "ping"):
            for slot in slots:
                found = keyed.get((agent, check, slot), [])
                if len(found) != 1:
                    problems.append(f"{agent} {check} {slot}: {len(found)} rows")
                    continue
                ok, error = found[0][4], found[0][5]
                want_ok = slot not in failing.get(agent, set())
                if ok != want_ok:
                    problems.append(f"{agent} {check} {slot}: ok={ok} ({error}), expected ok={want_ok}")
    assert not problems, "\n".join(problems[:40])


async def test_one_agent_cut_is_no_outage_all_six_cut_is_the_exact_window(lab, tmp_path: Path, report) -> None:
    """1. us-east .. sa-east probe the target every 2 s (HTTP and ICMP, quorum all, 6 s rule);
    2. eu-west's route to the target is blackholed for four rounds: it fails alone, no window;
    3. every agent's route is blackholed for five rounds: the window is exactly
       [first failed slot, first slot after the cut) for both checks."""
    started = time.monotonic()
    fleet = Fleet(lab, tmp_path, checks())
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), INTERVAL) + 2 * STEP
        lone = "eu-west"
        await sleep_until(t0 + MID)
        lab.blackhole(lone, TARGET_IP)
        await sleep_until(t0 + 4 * STEP + MID)
        lab.unblackhole(lone, TARGET_IP)

        await sleep_until(t0 + 5 * STEP + MID)
        for agent in fleet.agents:
            lab.blackhole(agent, TARGET_IP)
        await sleep_until(t0 + 10 * STEP + MID)
        for agent in fleet.agents:
            lab.unblackhole(agent, TARGET_IP)
        last = t0 + 12 * STEP
        await sleep_until(last + STEP)

        expected = [(z(t0 + 6 * STEP), z(t0 + 11 * STEP))]
        for policy in ("web", "ping"):
            await fleet.wait_for_windows(policy, expected, timeout=15)
        await fleet.wait_drained(timeout=20)
        rows = fleet.stored_rows()
        slots = [z(t0 + k * STEP) for k in range(13)]
        lone_slots = {z(t0 + k * STEP) for k in range(1, 5)}
        all_slots = {z(t0 + k * STEP) for k in range(6, 11)}
        failing = {a: set(all_slots) for a in fleet.agents}
        failing[lone] |= lone_slots
        expect_rows(fleet, rows, slots, failing)
        reasons = {(r[2], r[5]) for r in rows if not r[4]}
        assert reasons == {("web", "connect"), ("ping", "icmp")}, reasons
        for policy in ("web", "ping"):
            windows = await fleet.outages(policy)
            assert [(w["start"], w["end"]) for w in windows] == expected
            rounds = windows[0]["evidence"]["rounds"]
            assert len(rounds) == 5
            assert all(sorted(r["components"][policy]["failed"]) == sorted(fleet.agents) for r in rounds)
        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line("one agent cut, then all six", time.monotonic() - started,
                            f" window={expected[0][0]}..{expected[0][1]} (both checks), lone-agent rounds failed=4, windows from it=0"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()


async def test_collector_unreachable_while_the_target_fails(lab, tmp_path: Path, report) -> None:
    """1. every agent loses the collector (iptables DROP: requests hang, then time out);
    2. two rounds later the target host goes dark for six rounds (its link drops everything);
    3. the target comes back, and three rounds later the collector does too.
    While the collector is cut off it stores nothing for those rounds and no window exists; once
    the agents reach it again they replay their spools, nothing is lost or doubled, and the
    window appears with the exact start and end."""
    started = time.monotonic()
    fleet = Fleet(lab, tmp_path, checks())
    try:
        await fleet.start()
        t0 = slot_of(utcnow(), INTERVAL) + 2 * STEP
        await sleep_until(t0 + MID)
        for agent in fleet.agents:
            lab.partition(agent, COLLECTOR_IP)
        cut_at = utcnow()
        await sleep_until(t0 + 2 * STEP + MID)
        lab.isolate("target")
        await sleep_until(t0 + 8 * STEP + MID)
        lab.unisolate("target")
        await sleep_until(t0 + 11 * STEP + MID)

        # nothing after the cut reached the collector, so no window could be verified yet
        during = [r for r in fleet.stored_rows() if r[3] > z(t0)]
        assert during == [], f"{len(during)} results stored while the collector was cut off"
        assert await fleet.outages("web") == [] and await fleet.outages("ping") == []
        spooled = {a: fleet.spool_count(a) for a in fleet.agents}
        assert all(n >= 2 * 11 for n in spooled.values()), spooled

        for agent in fleet.agents:
            lab.heal(agent, COLLECTOR_IP)
        healed_at = utcnow()
        expected = [(z(t0 + 3 * STEP), z(t0 + 9 * STEP))]
        for policy in ("web", "ping"):
            await fleet.wait_for_windows(policy, expected, timeout=60)
        await fleet.wait_drained(timeout=60)
        replayed_in = (utcnow() - healed_at).total_seconds()
        rows = fleet.stored_rows()
        slots = [z(t0 + k * STEP) for k in range(13)]
        failing = {a: {z(t0 + k * STEP) for k in range(3, 9)} for a in fleet.agents}
        expect_rows(fleet, rows, slots, failing)
        reasons = {(r[2], r[5]) for r in rows if not r[4]}
        assert reasons == {("web", "timeout"), ("ping", "icmp")}, reasons
        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line(
            "collector unreachable while the target fails", time.monotonic() - started,
            f" cut_off={(healed_at - cut_at).total_seconds():.0f}s spooled_at_heal={sum(spooled.values())} "
            f"all_stored_within={replayed_in:.1f}s window={expected[0][0]}..{expected[0][1]}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()
