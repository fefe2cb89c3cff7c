"""An overloaded agent must not vote DOWN (agent/overload.py): a timeout failure during which the
agent's own event loop was late is not reported; the same failure with a punctual loop is."""

from __future__ import annotations

import asyncio
import math
import time

from agent_helpers import FakeCollector, Server, agent_config, parse_z, target_app, wait_until  # first

from agent.overload import LoopLag
from agent.runner import Agent


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(sample=0.02)
    lag.start()
    try:
        await asyncio.sleep(0.1)
        since = asyncio.get_running_loop().time()
        time.sleep(0.3)  # the loop is blocked: nothing runs meanwhile
        assert lag.worst_since(since) >= 0.25  # overdue right now, before the sampler even ran
        await asyncio.sleep(0.05)
        assert lag.worst_since(since) >= 0.25  # and recorded once it ran
    finally:
        await lag.stop()


async def test_a_timeout_while_the_agent_itself_was_late_is_not_reported(tmp_path) -> None:
    collector = await FakeCollector().start()
    target = await Server(target_app()).start()
    # the target never answers within the 300 ms timeout: every probe is a genuine timeout
    check = {"name": "web", "type": "http", "interval": "1s", "timeout": "300ms", "url": f"{target.url}/slow?s=5"}
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, checks=[check]), on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: len(seen) >= 1, timeout=5)
        assert seen[0]["ok"] is False and seen[0]["error"] == "timeout"  # a punctual loop reports it

        # block the agent's loop for 0.6 s from 0.1 s into the next slot: the probe's timer fires late
        loop = asyncio.get_running_loop()
        doomed = math.floor(time.time()) + 2
        loop.call_later(doomed + 0.1 - time.time(), time.sleep, 0.6)
        await wait_until(lambda: any(parse_z(r["slot"]).timestamp() > doomed for r in seen), timeout=6)
        slots = {parse_z(r["slot"]).timestamp() for r in seen}
        assert doomed not in slots, "a failure caused by the agent's own lateness was reported"
        assert doomed - 1 in slots and doomed + 1 in slots  # before and after: reported as usual
        doubtful = agent.registry.get_sample_value("uptime_agent_doubtful_failures_total", {"check": "web"})
        assert doubtful == 1
        await wait_until(lambda: set(collector.stored) >= {r["id"] for r in seen}, timeout=5)
        assert all(parse_z(r["slot"]).timestamp() != doomed for r in collector.stored.values())
    finally:
        await agent.stop()
        await target.stop()
        await collector.stop()
