"""The Agent in-process: assignments from the collector, metrics endpoint, stop and restart."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp
import pytest
from agent_helpers import REPO, FakeCollector, Server, agent_config, target_app, wait_until  # first

from agent.runner import Agent

METRIC_NAMES = [
    "uptime_agent_probe_success",
    "uptime_agent_probe_duration_seconds",
    "uptime_agent_probes_total",
    "uptime_agent_check_start_lateness_seconds_bucket",
    "uptime_agent_spool_results",
    "uptime_agent_spool_dropped_results_total",
    "uptime_agent_shipped_results_total",
    "uptime_agent_rejected_results_total",
    "uptime_agent_ship_failures_total",
    "uptime_agent_missed_slots_total",
    "uptime_agent_doubtful_failures_total",
    "uptime_agent_event_loop_lag_seconds",
    "uptime_agent_clock_offset_seconds",
    "uptime_agent_info",
]


@pytest.fixture
async def servers():
    collector = await FakeCollector().start()
    target = await Server(target_app()).start()
    yield collector, target
    await target.stop()
    await collector.stop()


def http_check(target, name="web", path="/ok", interval="1s"):
    return {"name": name, "type": "http", "interval": interval, "timeout": "500ms", "url": f"{target.url}{path}"}


async def test_assigned_checks_are_fetched_polled_applied_and_saved(tmp_path, servers):
    collector, target = servers
    collector.assignments["a1"] = [http_check(target)]
    seen: list[dict] = []
    config = agent_config(tmp_path, collector.url, collector={"assignments_interval": "200ms"})
    agent = Agent(config, on_result=seen.append)
    await agent.start()
    try:
        assert set(agent.checks) == {"web"}  # fetched before start() returns
        await wait_until(lambda: any(r["check"] == "web" for r in seen), timeout=5)
        await wait_until(lambda: any(status == 304 for _, _, status in collector.assignment_requests))

        collector.assignments["a1"] = [
            http_check(target, path="/fail"),
            {"name": "ping", "type": "icmp", "interval": "1s", "host": "127.0.0.1", "count": 1, "timeout": "200ms"},
        ]
        await wait_until(lambda: set(agent.checks) == {"web", "ping"}, timeout=5)
        assert agent.checks["web"].url.endswith("/fail")
        await wait_until(lambda: any(r["check"] == "ping" and r["ok"] for r in seen), timeout=5)
        await wait_until(lambda: any(r["check"] == "web" and r["error"] == "status" for r in seen), timeout=5)

        collector.assignments["a1"] = []
        await wait_until(lambda: agent.checks == {}, timeout=5)
    finally:
        await agent.stop()
    saved = json.loads((tmp_path / "assignments-a1.json").read_text())
    assert saved["checks"] == [] and saved["etag"]
    assert all(agent_id == "a1" for agent_id, _, _ in collector.assignment_requests)


async def test_saved_assignments_are_used_when_the_collector_is_down_at_start(tmp_path, servers):
    collector, target = servers
    collector.assignments["a1"] = [http_check(target)]
    config = agent_config(tmp_path, collector.url, collector={"assignments_interval": "200ms"})
    first = Agent(config)
    await first.start()
    await first.stop()

    port = collector.server.port
    await collector.stop()  # the collector is down when the agent restarts
    seen: list[dict] = []
    second = Agent(config, on_result=seen.append)
    await second.start()
    try:
        assert set(second.checks) == {"web"}
        await wait_until(lambda: len(seen) >= 1, timeout=5)  # probing goes on without a collector
        await collector.start(port)
        await wait_until(lambda: len(collector.stored) >= 1, timeout=10)  # and ships once it is back
    finally:
        await second.stop()


async def test_metrics_and_health_are_served_per_agent(tmp_path, servers):
    collector, target = servers
    agents = [Agent(agent_config(tmp_path, collector.url, agent_id=a, token=f"tok-{a}", checks=[http_check(target)]))
              for a in ("a1", "a2")]
    for agent in agents:
        await agent.start()
    try:
        await wait_until(lambda: all(
            a.registry.get_sample_value("uptime_agent_probes_total", {"check": "web", "type": "http", "result": "ok"})
            for a in agents), timeout=5)
        assert agents[0].metrics_port != agents[1].metrics_port
        async with aiohttp.ClientSession() as session:
            pages = {}
            for agent in agents:
                base = f"http://127.0.0.1:{agent.metrics_port}"
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain")
                    pages[agent.agent_id] = await response.text()
                async with session.get(f"{base}/healthz") as response:
                    health = await response.json()
                assert (health["agent"], health["status"], health["checks"]) == (agent.agent_id, "ok", 1)
    finally:
        for agent in agents:
            await agent.stop()
    for agent_id, page in pages.items():
        names = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if not line.startswith("#")}
        assert set(METRIC_NAMES) <= names, set(METRIC_NAMES) - names
        assert f'uptime_agent_info{{agent="{agent_id}"}} 1.0' in page
        assert 'uptime_agent_probes_total{check="web",result="ok",type="http"}' in page
        assert 'uptime_agent_probes_total{check="web",result="tls",type="http"} 0.0' in page  # exists before it happens
        assert 'uptime_agent_spool_dropped_results_total{reason="age"} 0.0' in page


async def test_stop_leaves_unshipped_results_in_the_spool_and_a_restart_ships_them_once(tmp_path, servers):
    collector, target = servers
    collector.fail_until = time.monotonic() + 3600  # the collector answers 503
    config = agent_config(tmp_path, collector.url, checks=[http_check(target)])
    seen: list[dict] = []

    async def on_result(result):  # coroutine callbacks are awaited too
        seen.append(result)

    agent = Agent(config, on_result=on_result)
    await agent.start()
    await wait_until(lambda: len(seen) >= 2, timeout=5)
    await agent.stop(timeout=0.5)
    assert agent.spool.count == len(seen) and collector.stored == {}
    before_restart = {r["id"] for r in seen}

    collector.fail_until = 0
    restarted = Agent(config, on_result=on_result)
    await restarted.start()
    try:
        await wait_until(lambda: set(collector.stored) >= before_restart, timeout=10)
    finally:
        await restarted.stop()
    # everything spooled before the restart arrives, once (ids are stable); what the restarted
    # agent probed itself is either shipped or still in its spool, never lost
    assert before_restart <= set(collector.stored)
    assert collector.duplicates == 0
    assert set(collector.stored) <= {r["id"] for r in seen}
    assert len(collector.stored) + restarted.spool.count == len(seen)


async def test_stop_flushes_what_it_can(tmp_path, servers):
    collector, target = servers
    config = agent_config(tmp_path, collector.url, collector={"flush_interval": "1h"}, checks=[http_check(target)])
    seen: list[dict] = []
    agent = Agent(config, on_result=seen.append)
    await agent.start()
    await wait_until(lambda: len(seen) >= 1, timeout=5)
    assert collector.stored == {}  # nothing shipped yet: the flush interval is an hour
    await agent.stop()
    assert set(collector.stored) == {r["id"] for r in seen}


async def test_cli_run_ships_results_and_stops_cleanly_on_sigterm(tmp_path, servers):
    collector, target = servers
    config = tmp_path / "agent.yml"
    config.write_text(
        f"collector:\n  url: {collector.url}\n  flush_interval: 100ms\n"
        f"metrics:\n  listen: 127.0.0.1:0\n"
        f"spool:\n  path: {tmp_path}/spool-{{agent_id}}.sqlite\n"
        f"checks:\n  - {{name: web, type: http, interval: 1s, timeout: 500ms, url: '{target.url}/ok'}}\n"
    )
    env = {**os.environ, "UPTIME_AGENT_TOKEN": "tok-a2", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--id", "a2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: len(collector.stored) >= 1, timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert "agent a2 started: 1 checks" in log and "agent a2 stopped" in log
    assert "Traceback" not in log
    assert {r["agent"] for r in collector.stored.values()} == {"a2"}


async def test_a_taken_metrics_port_fails_start_cleanly(tmp_path, servers):
    import socket

    collector, target = servers
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = agent_config(tmp_path, collector.url, metrics={"listen": f"127.0.0.1:{port}"},
                              checks=[http_check(target)])
        agent = Agent(config)
        with pytest.raises(OSError, match="address already in use"):
            await agent.start()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in tasks if t.get_name().startswith(("shipper-", "heartbeat-", "probe-", "spool-"))]
    assert not agent.spool.is_open
