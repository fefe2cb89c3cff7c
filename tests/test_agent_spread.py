"""Spread, grouping and admission (agent/schedule.py): each check at a fixed offset into its slot,
the same on every agent; one timer per (interval, offset) group; a bound on probes in flight, and
a probe too late for its scheduled time reported as a missed slot, never as a failure."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from agent_helpers import REPO, FakeCollector, Server, agent_config, parse_z, target_app, wait_until

from click.testing import CliRunner
from agent.cli import main
from agent.config import Spread, parse_config
from agent.runner import Agent
from agent.schedule import MAX_INSTANCES, CheckScheduler, spread_offset
from protocol.checks import ConfigError, parse_checks
from protocol.timestamps import EPOCH, slot_of


def test_offsets_come_from_the_name_only_and_are_the_same_in_every_process():
    names = [f"check-{i}" for i in range(200)]
    here = [spread_offset(name, 1.0) for name in names]
    assert all(0 <= o < 1.0 and round(o * 1000) == o * 1000 for o in here)  # whole ms within the window
    assert len(set(here)) > 150  # spread over the window, not piled up
    assert spread_offset("web", 0) == 0.0
    # another interpreter with another string-hash seed computes the same offsets
    code = ("import json, sys; from agent.schedule import spread_offset; "
            f"print(json.dumps([spread_offset(n, 1.0) for n in {names!r}]))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}, check=True)
        assert __import__("json").loads(out.stdout) == here


@pytest.mark.parametrize("value, interval, timeout, window", [
    ("0s", 60, 5, 0.0),
    ("30s", 60, 5, 30.0),
    ("50%", 60, 5, 30.0),
    ("100%", 60, 5, 55.0),  # capped: a probe scheduled on time still finishes inside its slot
    ("2m", 60, 5, 55.0),
    (0.25, 1, 0.5, 0.25),  # a bare number is seconds, as for every duration
])
def test_spread_is_a_duration_or_a_share_of_the_interval_capped_by_the_timeout(value, interval, timeout, window):
    config = parse_config({"collector": {"url": "http://x"}, "schedule": {"spread": value}})
    assert config.schedule.spread.window(interval, timeout) == pytest.approx(window)


@pytest.mark.parametrize("schedule, message", [
    ({"spread": "150%"}, "schedule.spread: invalid spread '150%'"),
    ({"spread": "soon"}, "schedule.spread: invalid spread 'soon'"),
    ({"max_in_flight": 0}, "schedule.max_in_flight:"),
    ({"max_lateness": "0s"}, "schedule.max_lateness: must be greater than 0"),
])
def test_bad_schedule_settings_name_the_key_and_exit_2(tmp_path, schedule, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"collector": {"url": "http://x"}, "schedule": schedule})
    assert message in str(caught.value)
    path = tmp_path / "agent.yml"
    path.write_text(__import__("json").dumps({"collector": {"url": "http://x", "token": "t"}, "schedule": schedule}))
    outcome = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert outcome.exit_code == 2 and message in outcome.output, outcome.output


@pytest.fixture
async def servers():
    collector = await FakeCollector().start()
    target = await Server(target_app()).start()
    yield collector, target
    await target.stop()
    await collector.stop()


def _names_with_distinct_offsets(window: float) -> tuple[str, str]:
    # two names whose offsets are far apart, so the results show each check at its own offset
    candidates = [f"web{i}" for i in range(50)]
    low = min(candidates, key=lambda n: spread_offset(n, window))
    high = max(candidates, key=lambda n: spread_offset(n, window))
    assert spread_offset(high, window) - spread_offset(low, window) > window / 2
    return low, high


async def test_two_agents_probe_each_check_at_its_own_offset_together(tmp_path, servers):
    collector, target = servers
    # 1 s slots, 200 ms timeout: the offset window is min(100% of 1 s, 1 s - 200 ms) = 800 ms
    low, high = _names_with_distinct_offsets(0.8)
    checks = [{"name": n, "type": "http", "interval": "1s", "timeout": "200ms", "url": f"{target.url}/ok"}
              for n in (low, high)]
    seen: dict[str, list[dict]] = {"a1": [], "a2": []}
    agents = [Agent(agent_config(tmp_path, collector.url, agent_id=a, token=f"tok-{a}", checks=checks,
                                 schedule={"spread": "100%"}), on_result=lambda r: seen[r["agent"]].append(r))
              for a in ("a1", "a2")]
    await asyncio.gather(*(agent.start() for agent in agents))
    try:
        await wait_until(lambda: all(sum(r["check"] == n for r in v) >= 3 for v in seen.values() for n in (low, high)),
                         timeout=15)
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))

    for name in (low, high):
        offset = timedelta(seconds=spread_offset(name, 0.8))
        assert agents[0].checks[name] and agents[0]._scheduler.offsets[name] == offset.total_seconds()
        by_agent = {a: {r["slot"]: r for r in v if r["check"] == name} for a, v in seen.items()}
        for results in by_agent.values():
            for r in results.values():
                slot, scheduled, started = parse_z(r["slot"]), parse_z(r["scheduled"]), parse_z(r["started"])
                assert (slot - EPOCH).total_seconds() % 1 == 0  # the slot is still the aligned one
                assert scheduled - slot == offset
                assert scheduled <= started < slot + timedelta(seconds=1)  # at its offset, inside its slot
        common = set(by_agent["a1"]) & set(by_agent["a2"])
        assert len(common) >= 2
        # simultaneity: both agents scheduled each common slot at the same instant
        assert all(by_agent["a1"][s]["scheduled"] == by_agent["a2"][s]["scheduled"] for s in common)

    # start lateness is measured from `scheduled`: its sum is that of started - scheduled, which
    # leaves out the offsets (hundreds of ms here) that started - slot would include
    for agent in agents:
        mine = seen[agent.agent_id]
        from_scheduled = sum((parse_z(r["started"]) - parse_z(r["scheduled"])).total_seconds() for r in mine)
        total = agent.registry.get_sample_value("uptime_agent_check_start_lateness_seconds_sum")
        assert abs(total - from_scheduled) <= 0.001 * len(mine)
    # the collector side got `scheduled` with every result
    await wait_until(lambda: len(collector.stored) == sum(len(v) for v in seen.values()), timeout=10)
    assert all("scheduled" in r for r in collector.stored.values())


async def test_a_probe_that_cannot_start_in_time_is_a_missed_slot_not_a_failure(tmp_path, servers):
    collector, target = servers
    # one probe in flight at a time; "hog" (first of the group) never gets an answer within its
    # 800 ms timeout, so "starved", due at the same instant, waits longer than max_lateness 200 ms
    checks = [
        {"name": "hog", "type": "http", "interval": "1s", "timeout": "800ms", "url": f"{target.url}/slow?s=5"},
        {"name": "starved", "type": "http", "interval": "1s", "timeout": "800ms", "url": f"{target.url}/ok"},
    ]
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, checks=checks,
                               schedule={"max_in_flight": 1, "max_lateness": "200ms"}), on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: agent.registry.get_sample_value(
            "uptime_agent_missed_slots_total", {"check": "starved"}) >= 2, timeout=10)
        await wait_until(lambda: sum(r["check"] == "hog" for r in seen) >= 2, timeout=10)
        assert agent.registry.get_sample_value("uptime_agent_probes_in_flight") <= 1
    finally:
        await agent.stop()
    assert [r for r in seen if r["check"] == "starved"] == []  # no result at all, above all no failure
    for result in ("ok", "timeout", "connect"):
        assert not agent.registry.get_sample_value(
            "uptime_agent_probes_total", {"check": "starved", "type": "http", "result": result})
    assert {r["error"] for r in seen if r["check"] == "hog"} == {"timeout"}  # the real failure is reported


def _icmp(name: str, interval: str = "250ms"):
    return parse_checks([{"name": name, "type": "icmp", "host": "127.0.0.1", "interval": interval,
                          "count": 1, "timeout": "100ms"}])[0]


async def test_a_check_never_runs_more_than_max_instances_at_once_and_the_rest_are_missed():
    release = asyncio.Event()
    running: list[int] = []
    now_running = 0
    missed: list[tuple[str, list]] = []

    async def run_slot(check, scheduled=None):
        nonlocal now_running
        now_running += 1
        running.append(now_running)
        try:
            await release.wait()
        finally:
            now_running -= 1

    scheduler = CheckScheduler(run_slot, lambda name, slots: missed.append((name, slots)))
    scheduler.start()
    scheduler.add(_icmp("x"))
    try:
        await wait_until(lambda: len(missed) >= 2, timeout=5)
    finally:
        release.set()
        await scheduler.shutdown()
    assert max(running) == MAX_INSTANCES
    assert all(name == "x" and len(slots) == 1 for name, slots in missed)
    slots = [s for _, s in missed for s in s]
    assert all(slot_of(s, 0.25) == s for s in slots)  # the slots themselves, aligned


async def test_ten_thousand_checks_share_a_few_timers_and_each_fires_at_its_offset():
    fired: dict[str, object] = {}

    async def run_slot(check, scheduled=None):
        fired.setdefault(check.name, scheduled)

    # a 2 s interval spread over 50 %: offsets in [0, 1 s) in whole ms, so at most 1,000 groups
    checks = parse_checks([{"name": f"c{i:05d}", "type": "icmp", "host": "127.0.0.1", "interval": "2s",
                            "count": 1, "timeout": "100ms"} for i in range(10_000)])
    scheduler = CheckScheduler(run_slot, lambda name, slots: None, spread=Spread(fraction=0.5),
                               max_in_flight=10_000)
    for check in checks:
        scheduler.add(check)
    assert len(scheduler._groups) <= 1000
    scheduler.start()
    try:
        assert sum(g.handle is not None for g in scheduler._groups.values()) == len(scheduler._groups)
        await wait_until(lambda: len(fired) == len(checks), timeout=10)
    finally:
        await scheduler.shutdown()
    for check in checks:
        scheduled = fired[check.name]
        slot = slot_of(scheduled, 2)
        assert (scheduled - slot).total_seconds() == pytest.approx(spread_offset(check.name, 1.0), abs=1e-6)
    # removing them all leaves no timer behind
    for check in checks:
        scheduler.remove(check.name)
    assert scheduler._groups == {} and scheduler.checks == {}
