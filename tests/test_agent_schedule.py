"""Scheduling: slots are multiples of the interval since the epoch, equal across agents."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from agent_helpers import FakeCollector, Server, agent_config, parse_z, target_app, wait_until  # first

from agent.runner import Agent
from agent.schedule import aligned_fire_times, misfire_grace
from protocol.timestamps import EPOCH, rfc3339, slot_of


@pytest.mark.parametrize(
    "moment, interval, slot",
    [
        ("2026-11-25T02:40:00.000Z", 60, "2026-11-25T02:40:00Z"),
        ("2026-11-25T02:40:59.999Z", 60, "2026-11-25T02:40:00Z"),
        ("2026-11-25T02:46:00.000Z", 360, "2026-11-25T02:42:00Z"),  # 360 s slots are epoch-aligned, not hour-aligned
        ("2026-11-25T02:40:07.300Z", 0.25, "2026-11-25T02:40:07.250Z"),
        ("2026-11-25T02:40:02.9999996Z", 3, "2026-11-25T02:40:03Z"),  # a float hair below the slot is the slot
    ],
)
def test_slot_is_floor_of_the_scheduled_time_on_the_epoch_grid(moment, interval, slot):
    assert rfc3339(slot_of(parse_z_loose(moment), interval)) == slot


def parse_z_loose(text: str) -> datetime:
    whole, _, fraction = text[:-1].partition(".")
    base = datetime.fromisoformat(whole + "+00:00")
    return base + timedelta(seconds=float("0." + fraction)) if fraction else base


def test_fire_times_are_aligned_multiples_and_grace_is_whole_seconds():
    after = datetime(2026, 11, 25, 2, 40, 1, 500000, tzinfo=timezone.utc)
    assert [rfc3339(t) for t in aligned_fire_times(90, after, 2)] == ["2026-11-25T02:40:30Z", "2026-11-25T02:42:00Z"]
    assert (misfire_grace(1), misfire_grace(60), misfire_grace(0.25)) == (1, 30, 1)


@pytest.fixture
async def servers():
    collector = await FakeCollector().start()
    target = await Server(target_app()).start()
    yield collector, target
    await target.stop()
    await collector.stop()


async def test_two_agents_probe_the_same_aligned_slots(tmp_path, servers):
    collector, target = servers
    check = {"name": "web", "type": "http", "interval": "1s", "timeout": "500ms", "url": f"{target.url}/ok"}
    seen: dict[str, list[dict]] = {"a1": [], "a2": []}
    agents = [
        Agent(agent_config(tmp_path, collector.url, agent_id="a1", token="tok-a1", checks=[check]),
              on_result=lambda r: seen[r["agent"]].append(r)),
        # a2 adds jitter: its probes start later, but for the same slots
        Agent(agent_config(tmp_path, collector.url, agent_id="a2", token="tok-a2", checks=[check],
                           schedule={"jitter": "300ms"}),
              on_result=lambda r: seen[r["agent"]].append(r)),
    ]
    await asyncio.gather(*(agent.start() for agent in agents))
    try:
        await wait_until(lambda: min(len(v) for v in seen.values()) >= 4, timeout=10)
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))

    slots = {agent: [parse_z(r["slot"]) for r in results] for agent, results in seen.items()}
    for agent, agent_slots in slots.items():
        assert all(s.microsecond == 0 for s in agent_slots), agent  # k * 1 s since the epoch
        assert agent_slots == sorted(set(agent_slots)), agent  # one probe per slot
        # consecutive slots: none skipped
        assert all(b - a == timedelta(seconds=1) for a, b in zip(agent_slots, agent_slots[1:])), agent
    common_start = max(s[0] for s in slots.values())
    common_end = min(s[-1] for s in slots.values())
    window = {agent: [s for s in v if common_start <= s <= common_end] for agent, v in slots.items()}
    assert len(window["a1"]) >= 3
    assert window["a1"] == window["a2"]

    lateness = {agent: [(parse_z(r["started"]) - parse_z(r["slot"])).total_seconds() for r in results]
                for agent, results in seen.items()}
    # every probe starts inside its own slot (never before it, never in the next one); how late
    # within the slot is a benchmark's business (bench/), not a test's
    assert all(0 <= late < 1.0 for late in lateness["a1"]), lateness
    assert all(0 <= late < 1.0 for late in lateness["a2"]), lateness
    histogram = agents[0].registry.get_sample_value("uptime_agent_check_start_lateness_seconds_count")
    assert histogram == len(seen["a1"])
    # every result got to the collector, under its agent, with its slot
    await wait_until(lambda: len(collector.stored) == sum(len(v) for v in seen.values()))
    assert {(r["agent"], r["check"], r["slot"]) for r in collector.stored.values()} == {
        (r["agent"], r["check"], r["slot"]) for v in seen.values() for r in v}


async def test_a_stalled_agent_reports_the_slots_it_missed(tmp_path, servers, caplog):
    collector, target = servers
    check = {"name": "web", "type": "http", "interval": "1s", "timeout": "500ms", "url": f"{target.url}/ok"}
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, checks=[check]), on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: len(seen) >= 1, timeout=5)
        with caplog.at_level(logging.WARNING, logger="agent.runner"):
            time.sleep(2.6)  # the event loop is blocked: a real stall, no clock is faked
            await wait_until(lambda: agent.registry.get_sample_value(
                "uptime_agent_missed_slots_total", {"check": "web"}) >= 1, timeout=5)
            await wait_until(lambda: len(seen) >= 3, timeout=5)
    finally:
        await agent.stop()
    assert any("slot(s) not probed" in r.getMessage() for r in caplog.records)
    slots = [parse_z(r["slot"]) for r in seen]
    assert slots == sorted(set(slots)) and all(s.microsecond == 0 for s in slots)
    assert max(b - a for a, b in zip(slots, slots[1:])) >= timedelta(seconds=2)  # the gap is real


async def test_changed_checks_are_replaced_and_removed_ones_stop(tmp_path, servers):
    collector, target = servers
    web = {"name": "web", "type": "http", "interval": "1s", "timeout": "500ms", "url": f"{target.url}/ok"}
    other = {**web, "name": "other"}
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, checks=[web, other]), on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: {r["check"] for r in seen} == {"web", "other"}, timeout=5)
        from protocol.checks import parse_checks

        before = agent.checks["web"]
        await agent.apply_checks(parse_checks([{**web, "url": f"{target.url}/fail"}]))
        assert agent.checks["web"] is not before and agent.checks["web"].url.endswith("/fail")
        assert set(agent.checks) == {"web"}
        changed_at = datetime.now(timezone.utc)
        await wait_until(lambda: any(r["check"] == "web" and r["error"] == "status" for r in seen), timeout=5)
        await asyncio.sleep(1.2)
    finally:
        await agent.stop()
    late_other = [r for r in seen if r["check"] == "other" and parse_z(r["started"]) > changed_at]
    assert late_other == []
    assert agent.registry.get_sample_value("uptime_agent_probe_success", {"check": "other", "type": "http"}) is None
    assert agent.registry.get_sample_value("uptime_agent_probe_success", {"check": "web", "type": "http"}) == 0


async def test_the_slot_comes_from_the_scheduled_time_not_the_late_start(tmp_path, servers):
    collector, target = servers
    check = {"name": "web", "type": "http", "interval": "1m", "timeout": "500ms", "url": f"{target.url}/ok"}
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, checks=[check]), on_result=seen.append)
    await agent.start()
    try:
        # As the executor hands it over for a run that starts long after its slot: a fire time a
        # float hair below an aligned minute, ten minutes ago.
        aligned = slot_of(datetime.now(timezone.utc), 60) - timedelta(minutes=10)
        scheduled = aligned - timedelta(microseconds=1)
        await agent._run_slot(agent.checks["web"], scheduled=scheduled)
    finally:
        await agent.stop()
    (result,) = [r for r in seen if parse_z(r["slot"]) == aligned]
    assert parse_z(result["started"]) - aligned > timedelta(minutes=9)
    assert (aligned - EPOCH).total_seconds() % 60 == 0


async def test_the_executor_hands_each_job_its_aligned_fire_time():
    from protocol.checks import parse_checks
    from agent.schedule import CheckScheduler

    fired: list[datetime] = []

    async def run_slot(check, scheduled=None):
        fired.append(scheduled)

    scheduler = CheckScheduler(run_slot, lambda name, slots: None)
    scheduler.start()
    scheduler.add(parse_checks([{"name": "x", "type": "icmp", "host": "127.0.0.1", "interval": "250ms",
                                 "count": 1, "timeout": "100ms"}])[0])
    try:
        await wait_until(lambda: len(fired) >= 3, timeout=5)
    finally:
        await scheduler.shutdown()
    assert all(round((t - EPOCH).total_seconds() * 1000) % 250 == 0 for t in fired), fired
    assert all(abs((t - slot_of(t, 0.25)).total_seconds()) < 0.001 for t in fired)
