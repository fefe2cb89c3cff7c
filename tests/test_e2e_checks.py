"""Checks changed through the admin API reach running agents without a restart (issue 4, "Central
check distribution"): `uptime-collector serve` and two `uptime-agent run` processes that list no
checks of their own; the target records which vantage point asked for which path, and when."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from test_e2e_fleet import console_script, free_port, stop, wait_http

pytestmark = pytest.mark.e2e

AGENTS = ("a1", "a2")
ADMIN = "e2e-admin-token-0123456789"


class RecordingTarget:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (monotonic time, path, agent)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        ua = request.headers.get("User-Agent", "")
        agent = next((a for a in AGENTS if f"agent {a}" in ua), "?")
        self.seen.append((time.monotonic(), request.path, agent))
        return web.Response(text="ok")

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def askers(self, path: str, since: float) -> set[str]:
        return {agent for t, p, agent in self.seen if p == path and t >= since}

    async def wait_for(self, path: str, agents: set[str], since: float, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.askers(path, since) != agents:
            assert time.monotonic() < deadline, f"{path}: asked by {self.askers(path, since)}, expected {agents}"
            await asyncio.sleep(0.1)


async def test_agents_take_up_created_changed_and_removed_checks(tmp_path: Path) -> None:
    target = RecordingTarget()
    await target.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = {a: f"e2e-token-{a}-0123456789" for a in AGENTS}
    url = f"http://127.0.0.1:{target.port}"
    (tmp_path / "collector.yml").write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}",
        "admin_token": ADMIN,
        "evaluation": {"interval": "250ms", "grace": "1500ms"},
        "agents": [{"id": a, "token": t} for a, t in tokens.items()],
        "checks": [{"name": "web", "type": "http", "interval": 1, "url": f"{url}/", "timeout": "800ms"}],
    }))
    (tmp_path / "agent.yml").write_text(yaml.safe_dump({
        "collector": {"url": base, "flush_interval": "200ms", "assignments_interval": "500ms"},
        "metrics": {"listen": "127.0.0.1:0"},
        "spool": {"path": str(tmp_path / "spool-{agent_id}.sqlite")},
        "guard": {"block_private": False},  # the assigned checks probe 127.0.0.1
    }))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    admin = {"Authorization": f"Bearer {ADMIN}"}
    try:
        procs.append(subprocess.Popen(
            [console_script("uptime-collector"), "serve", "--config", str(tmp_path / "collector.yml")],
            stdout=open(logs / "collector.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path))
        await wait_http(f"{base}/healthz")
        for a in AGENTS:
            procs.append(subprocess.Popen(
                [console_script("uptime-agent"), "run", "--config", str(tmp_path / "agent.yml"), "--id", a],
                env={**os.environ, "UPTIME_AGENT_TOKEN": tokens[a]},
                stdout=open(logs / f"{a}.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path))
        t0 = time.monotonic()
        await target.wait_for("/", set(AGENTS), t0)

        async with aiohttp.ClientSession(base) as http:
            # 1. created for a1 only: a1 starts probing it, a2 never does
            check = {"type": "http", "interval": "1s", "url": f"{url}/api", "timeout": "800ms", "agents": ["a1"]}
            async with http.put("/api/v1/checks/api", json=check, headers=admin) as resp:
                assert resp.status == 201, await resp.text()
            t1 = time.monotonic()
            await target.wait_for("/api", {"a1"}, t1)
            # its results are stored and evaluated
            deadline = time.monotonic() + 10
            while True:
                async with http.get("/metrics") as resp:
                    if 'uptime_collector_probe_success{agent="a1",check="api"} 1.0' in await resp.text():
                        break
                assert time.monotonic() < deadline, "no result of the new check reached the collector"
                await asyncio.sleep(0.2)

            # 2. replaced: another path, every 2 s, now for both; the old schedule stops
            check.update(url=f"{url}/api/v2", interval="2s", agents=["a1", "a2"])
            async with http.put("/api/v1/checks/api", json=check, headers=admin) as resp:
                assert resp.status == 200, await resp.text()
            t2 = time.monotonic()
            await target.wait_for("/api/v2", set(AGENTS), t2)
            settled = time.monotonic() + 2
            await asyncio.sleep(4)
            assert target.askers("/api", settled) == set(), "the replaced schedule still runs"
            v2 = sorted(t for t, p, a in target.seen if p == "/api/v2" and a == "a1" and t >= settled)
            assert 1 <= len(v2) <= 3, v2  # every 2 s, not every second

            # 3. removed: nobody probes it any more; the configured check goes on
            async with http.delete("/api/v1/checks/api", headers=admin) as resp:
                assert resp.status == 200, await resp.text()
            await asyncio.sleep(3)
            t3 = time.monotonic()
            await asyncio.sleep(3)
            assert target.askers("/api/v2", t3) == set(), "the removed check is still probed"
            await target.wait_for("/", set(AGENTS), t3)
    finally:
        stop(procs[1:])
        stop(procs[:1])
        await target.runner.cleanup()
    for p in procs:
        assert p.returncode == 0, f"{p.args[0]} exited with {p.returncode}"
    for a in AGENTS:
        assert "Traceback" not in (logs / f"{a}.log").read_text()
