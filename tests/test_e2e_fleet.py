"""End to end: `uptime-collector serve` and six `uptime-agent run` processes from config files,
a real HTTP target on loopback, real ICMP to 127.0.0.1. Time is compressed through configuration
only (2-second polls, a 4-second outage rule); nothing patches a clock."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

pytestmark = pytest.mark.e2e

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
INTERVAL = 2.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def slot_of(moment: datetime) -> datetime:
    ms = int((moment - EPOCH) / timedelta(milliseconds=1))
    step = int(INTERVAL * 1000)
    return EPOCH + timedelta(milliseconds=ms // step * step)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"console script {name} is not installed"
    return found


class Target:
    """HTTP target whose listener can be closed, and which can refuse chosen vantage points."""

    def __init__(self) -> None:
        self.fail_for: set[str] = set()
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.site: web.TCPSite | None = None
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        ua = request.headers.get("User-Agent", "")
        if any(f"agent {a}" in ua for a in self.fail_for):
            return web.Response(status=503, text="unavailable for this vantage point")
        return web.Response(text="ok")

    async def up(self) -> None:
        if not self.runner.server:
            await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()

    async def down(self) -> None:
        assert self.site is not None
        await self.site.stop()
        self.site = None


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()))


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def get_json(url: str, **params):
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def wait_for_window(base: str, policy: str, closed: bool, timeout: float = 20) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        windows = (await get_json(f"{base}/api/v1/outages", policy=policy))["outages"]
        if windows and (not closed or all(w["end"] for w in windows)):
            return windows
        if asyncio.get_running_loop().time() > deadline:
            return windows
        await asyncio.sleep(0.25)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


async def test_fleet_of_six_agents_verifies_the_exact_window(tmp_path: Path) -> None:
    target = Target()
    await target.up()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = {a: f"e2e-token-{a}-0123456789" for a in AGENTS}
    collector_cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}",
        "evaluation": {"interval": "250ms", "grace": "1500ms"},
        "agents": [{"id": a, "token": t} for a, t in tokens.items()],
        "checks": [
            {"name": "web", "type": "http", "interval": INTERVAL, "url": f"http://127.0.0.1:{target.port}/",
             "timeout": "1s", "expected_status": [200], "outage": {"quorum": "all", "min_duration": "4s"}},
            {"name": "ping", "type": "icmp", "interval": INTERVAL, "host": "127.0.0.1", "count": 1,
             "timeout": "1s", "outage": {"quorum": "all", "min_duration": "4s"}},
        ],
    }
    (tmp_path / "collector.yml").write_text(yaml.safe_dump(collector_cfg))
    agent_cfg = {
        "collector": {"url": base, "flush_interval": "200ms", "heartbeat_interval": "2s"},
        "metrics": {"listen": "127.0.0.1:0"},
        "spool": {"path": str(tmp_path / "spool-{agent_id}.sqlite")},
        "guard": {"block_private": False},  # the assigned checks probe 127.0.0.1
    }
    (tmp_path / "agent.yml").write_text(yaml.safe_dump(agent_cfg))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
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
        step = timedelta(seconds=INTERVAL)
        half = timedelta(seconds=0.7)  # act mid-slot, after that slot's probes are done
        start = slot_of(datetime.now(timezone.utc)) + 2 * step

        # 1. one vantage point fails for four rounds: never an outage
        await sleep_until(start + half)
        target.fail_for = {"eu-west"}
        await sleep_until(start + 4 * step + half)
        target.fail_for = set()

        # 2. the target goes down for five rounds: all six fail
        await sleep_until(start + 5 * step + half)
        await target.down()
        expected_start = start + 6 * step
        await sleep_until(start + 10 * step + half)
        await target.up()
        expected_end = start + 11 * step
        await sleep_until(expected_end + step)

        windows = await wait_for_window(base, "web", closed=True)
        assert [(w["start"], w["end"]) for w in windows] == [(z(expected_start), z(expected_end))], (
            (logs / "collector.log").read_text()[-3000:])
        window = windows[0]
        assert window["minutes"] == pytest.approx(10 / 60, abs=1e-3)
        rounds = window["evidence"]["rounds"]
        assert len(rounds) == 5
        for r in rounds:
            assert sorted(r["components"]["web"]["failed"]) == sorted(AGENTS)

        # ICMP to loopback stayed up: no window, and every agent's last ping succeeded
        assert (await get_json(f"{base}/api/v1/outages", policy="ping"))["outages"] == []
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
        for a in AGENTS:
            assert f'uptime_collector_probe_success{{agent="{a}",check="ping"}} 1.0' in metrics
            assert f'uptime_collector_probe_success{{agent="{a}",check="web"}} 1.0' in metrics
        assert 'uptime_collector_outage_events_total{kind="verified",policy="web"} 1.0' in metrics
        assert 'uptime_collector_outage_events_total{kind="resolved",policy="web"} 1.0' in metrics
        assert 'uptime_collector_outage_open{policy="web"} 0.0' in metrics
    finally:
        stop(procs[1:])
        stop(procs[:1])
        if target.site is not None:
            await target.down()
        await target.runner.cleanup()
    for p in procs:
        assert p.returncode == 0, f"{p.args[0]} exited with {p.returncode}"
