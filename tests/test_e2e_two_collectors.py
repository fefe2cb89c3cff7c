"""Two `uptime-collector serve` processes on one PostgreSQL database, six agents split between
them; the collector that evaluates is killed with SIGKILL in the middle of an outage. The other
takes the evaluation lease within seconds, and the stored windows equal what a single collector
computes from the same results (the offline evaluation core over the whole database)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml

from collector.db import make_engine, make_sessionmaker
from collector.rules.rounds import evaluate_rounds
from collector.rules.windows import find_windows
from collector.service import policy_for_check
from collector.store import load_observations
from test_e2e_fleet import AGENTS, INTERVAL, Target, console_script, free_port, get_json, sleep_until, slot_of, stop, wait_http, z

pytestmark = pytest.mark.e2e


async def lease_holder(bases: list[str]) -> int | None:
    """The collector holding the lease of the evaluation shard that check `web` belongs to."""
    from collector.config import Evaluation
    from collector.shards import shard_lease, shard_of

    lease = shard_lease(shard_of("web", Evaluation().shards))
    async with aiohttp.ClientSession() as http:
        for i, base in enumerate(bases):
            try:
                async with http.get(f"{base}/metrics") as resp:
                    if f'uptime_collector_lease_held{{lease="{lease}"}} 1.0' in await resp.text():
                        return i
            except aiohttp.ClientError:
                continue
    return None


async def test_killing_the_evaluating_collector_changes_no_window(database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several collectors share a PostgreSQL database (SQLite is one process's file)")
    target = Target()
    await target.up()
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    tokens = {a: f"two-token-{a}-0123456789" for a in AGENTS}
    check = {"name": "web", "type": "http", "interval": INTERVAL, "url": f"http://127.0.0.1:{target.port}/",
             "timeout": "1s", "outage": {"quorum": "all", "min_duration": "4s"}}
    for i, port in enumerate(ports):
        (tmp_path / f"collector{i}.yml").write_text(yaml.safe_dump({
            "listen": {"host": "127.0.0.1", "port": port}, "database_url": database_url,
            "evaluation": {"interval": "250ms", "grace": "1500ms", "status_interval": "1h"},
            "lease_ttl": "2s", "agents": [{"id": a, "token": t} for a, t in tokens.items()], "checks": [check]}))
    logs = tmp_path / "logs"
    logs.mkdir()

    def start_collector(i: int) -> subprocess.Popen:
        return subprocess.Popen([console_script("uptime-collector"), "serve", "--config", str(tmp_path / f"collector{i}.yml")],
                                stdout=open(logs / f"collector{i}.log", "a"), stderr=subprocess.STDOUT, cwd=tmp_path)

    collectors = [start_collector(0)]
    await wait_http(f"{bases[0]}/healthz")  # the first one migrates the schema
    collectors.append(start_collector(1))
    await wait_http(f"{bases[1]}/healthz")
    agents = []
    for n, a in enumerate(AGENTS):
        (tmp_path / f"agent-{a}.yml").write_text(yaml.safe_dump({
            "collector": {"url": bases[n % 2], "flush_interval": "200ms", "heartbeat_interval": "2s"},
            "metrics": {"listen": "127.0.0.1:0"}, "spool": {"path": str(tmp_path / "spool-{agent_id}.sqlite")},
            "guard": {"block_private": False}}))  # the assigned checks probe 127.0.0.1
        agents.append(subprocess.Popen(
            [console_script("uptime-agent"), "run", "--config", str(tmp_path / f"agent-{a}.yml"), "--id", a],
            env={**os.environ, "UPTIME_AGENT_TOKEN": tokens[a]}, stdout=open(logs / f"{a}.log", "w"),
            stderr=subprocess.STDOUT, cwd=tmp_path))
    try:
        step = timedelta(seconds=INTERVAL)
        half = timedelta(seconds=0.7)
        start = slot_of(datetime.now(timezone.utc)) + 2 * step
        await sleep_until(start + half)
        await target.down()
        expected_start = start + step
        # the evaluating collector dies mid-outage, while its agents keep probing
        await asyncio.sleep(1.0)
        leader = await lease_holder(bases)
        assert leader is not None, "no collector holds the evaluation lease"
        collectors[leader].send_signal(signal.SIGKILL)
        collectors[leader].wait(10)
        other = 1 - leader
        deadline = asyncio.get_running_loop().time() + 15
        while await lease_holder([bases[other]]) is None:
            assert asyncio.get_running_loop().time() < deadline, "the other collector never took over"
            await asyncio.sleep(0.25)
        await sleep_until(start + 5 * step + half)
        await target.up()
        expected_end = start + 6 * step
        # the killed collector comes back: its agents deliver what they spooled meanwhile
        collectors[leader] = start_collector(leader)
        await wait_http(f"{bases[leader]}/healthz")
        await sleep_until(expected_end + 3 * step)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            windows = (await get_json(f"{bases[other]}/api/v1/outages", policy="web"))["outages"]
            if windows and all(w["end"] for w in windows):
                break
            assert asyncio.get_running_loop().time() < deadline, windows
            await asyncio.sleep(0.25)
        assert [(w["start"], w["end"]) for w in windows] == [(z(expected_start), z(expected_end))]
    finally:
        stop(agents)
        stop(collectors)
        await target.runner.cleanup()

    # what one collector computes from the same evidence
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            observations = await load_observations(session, ["web"], start - 10 * step, expected_end + 10 * step)
    finally:
        await engine.dispose()
    from collector.config import CheckEntry

    policy = policy_for_check(CheckEntry.model_validate(check))
    rounds = evaluate_rounds(policy, observations, slot_of(min(o.ts for o in observations)),
                             slot_of(max(o.ts for o in observations)) + step,
                             expected_by_component={"web": list(AGENTS)})
    offline = [(z(w.start), z(w.end)) for w in find_windows(policy, rounds) if w.end is not None]
    assert offline == [(w["start"], w["end"]) for w in windows]
    per_agent_slots = {}
    for o in observations:
        per_agent_slots.setdefault(o.agent, set()).add(o.ts)
    assert set(per_agent_slots) == set(AGENTS)  # every agent's evidence arrived, through either collector
