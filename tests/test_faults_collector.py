"""Collector faults that the fault-injection scenarios ran into, each pinned by a test of its own
(real `uptime-collector serve` processes on loopback).

* A SIGTERM during the first seconds of a run can leave the collector hanging for ever in
  aiohttp's task cancellation: the lifecycle disposes the database engine while periodic jobs
  started by APScheduler (shut down with wait=False) still hold sessions; cancelled, those jobs
  wait on an aiosqlite connection whose thread is gone.
* The month-to-date status reports are computed on the event loop over every slot of the month
  (about a million rounds for a 2-second check by the 25th): for seconds at a time the collector
  answers nothing, neither ingest nor /healthz.
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from netlab.fleet import console_script

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, port: int, interval: float, checks: int = 2) -> Path:
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}",
        "evaluation": {"interval": "250ms", "grace": "1500ms"},
        "agents": [{"id": "a1", "token": "collector-fault-token-0123456789"}],
        "checks": [{"name": f"web{i}", "type": "http", "interval": interval, "url": "http://127.0.0.1:9/",
                    "timeout": "500ms"} for i in range(checks)],
    }
    path = tmp_path / "collector.yml"
    path.write_text(json.dumps(config))
    return path


async def healthz_latencies(port: int, seconds: float) -> tuple[float | None, list[float]]:
    """Ask /healthz every 100 ms for `seconds`: (seconds until the first 200, each answer's latency)."""
    started = time.monotonic()
    first_ok = None
    latencies = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while time.monotonic() - started < seconds:
            t0 = time.monotonic()
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.monotonic() - t0)
                        if first_ok is None:
                            first_ok = time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    return first_ok, latencies


async def test_collector_exits_on_sigterm_soon_after_start(tmp_path: Path) -> None:
    """SIGTERM 0-0.8 s after /healthz first answers, twelve times: each run must end by itself
    within 6 s with status 0. (When this test was written about one run in five hung for ever:
    twenty checks keep the evaluation job busy, so that SIGTERM often finds it mid-query.)"""
    rng = random.Random(4)
    hung = []
    for attempt in range(12):
        run_dir = tmp_path / f"run{attempt}"
        run_dir.mkdir()
        port = free_port()
        config = write_config(run_dir, port, interval=60, checks=20)
        log = open(run_dir / "collector.log", "w")
        proc = subprocess.Popen([console_script("uptime-collector"), "serve", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)
        try:
            first_ok, _ = await healthz_latencies(port, 0.1)
            deadline = time.monotonic() + 30
            while first_ok is None and time.monotonic() < deadline:
                first_ok, _ = await healthz_latencies(port, 0.1)
            await asyncio.sleep(rng.uniform(0, 0.8))
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=6)
                assert code == 0, (run_dir / "collector.log").read_text()[-2000:]
            except subprocess.TimeoutExpired:
                hung.append(attempt)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    assert hung == [], f"the collector did not exit within 6 s of SIGTERM in runs {hung} of 12"


async def test_collector_answers_within_a_second_while_its_periodic_jobs_run(tmp_path: Path) -> None:
    """Two checks at a 1-second interval (compressed timing, as in every end-to-end test):
    /healthz must answer within 4 s of the start and then always within 1 s."""
    port = free_port()
    config = write_config(tmp_path, port, interval=1)
    log = open(tmp_path / "collector.log", "w")
    proc = subprocess.Popen([console_script("uptime-collector"), "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        first_ok, latencies = await healthz_latencies(port, 12)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    worst = max(latencies, default=None)
    print(f"\n[collector responsiveness] first /healthz after {first_ok}s; worst answer {worst}s "
          f"over {len(latencies)} answers")
    assert first_ok is not None and first_ok < 4, f"first /healthz answer after {first_ok}s"
    assert worst is not None and worst < 1, f"a /healthz answer took {worst:.1f}s (event loop blocked)"
