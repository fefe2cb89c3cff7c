"""Fault injection: a long collector absence, with a million results waiting in one agent's spool.

Probing a million results takes far too long on a 2-core machine (the agent would need about
5,500 probes a second for three minutes), so the spool is filled honestly in two parts:
  1. the real agent runs with its checks while no collector exists (the proxy in front of the
     collector answers 502): its real results are spooled;
  2. the test stops it and adds synthetic results through the agent's own Spool API
     (`Spool.put_many`, one transaction per 50,000) until the spool holds at least 1,000,000:
     results of the same checks for the slots before the real ones (every 2 s, about 11.6
     days back), in time order, as a long absence would have left them.
Then the agent is started again on that spool, the collector comes up, and the test waits until
the spool is empty: every one of the spooled ids must be stored, each exactly once, no
(agent, check, slot) twice, and the outage hidden in the replayed history must become a window
(replayed results reach the rules as late results). Set UPTIME_FAULTS_BACKLOG to another number
of results to change the size.

It takes about two and a half minutes on a 2-core machine: filling the spool about 20 s, the
replay about 110 s at 9,000-11,000 results a second end to end (10,000 per POST; one INSERT …
RETURNING per batch, and the collector re-judges only the stretches each batch touched).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from netlab.fleet import Fleet, TerminalReport, http_check, icmp_check, z
from netlab.lab import Lab, require_lab

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
AGENT = "us-east"
BACKLOG = int(os.environ.get("UPTIME_FAULTS_BACKLOG", "1000000"))
REPLAY_LIMIT = 900.0  # seconds for the whole backlog to reach the collector (about 110 s here)


@pytest.fixture
def lab():
    require_lab()  # skips without root, ip or iptables; fails instead under CI
    with Lab([AGENT]) as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return TerminalReport(capsys)


async def fill_spool(path: Path, total: int, before: datetime) -> tuple[int, tuple[datetime, datetime]]:
    """Add synthetic results of `web` and `ping` for the slots before `before` until the spool
    holds `total`, in time order. All succeed, except five consecutive rounds in the middle of
    that history, where both checks fail: an outage the collector can only learn of from the
    replay. Returns (how many were added, the outage's expected window)."""
    from agent.spool import Spool

    spool = Spool(path, max_bytes=2 * 1024**3, max_age=7 * 86400)
    await spool.open()
    try:
        needed = total - spool.count
        first = int(before.timestamp()) - INTERVAL * ((needed + 1) // 2)
        outage_from = first + INTERVAL * (needed // 4)  # a slot of both checks, half-way back
        outage = range(int(outage_from), int(outage_from + 5 * INTERVAL), int(INTERVAL))
        added = 0
        chunk = 50_000
        for start in range(0, needed, chunk):
            batch = []
            for k in range(start, min(needed, start + chunk)):
                at = int(first + INTERVAL * (k // 2))
                slot = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                ok = at not in outage
                batch.append({
                    "id": os.urandom(16).hex(), "check": "web" if k % 2 else "ping", "slot": slot,
                    "started": slot[:-1] + ".004Z", "ok": ok, "latency_ms": 1.25 if ok else None,
                    "status_code": (200 if ok else None) if k % 2 else None,
                    "error": None if ok else ("timeout" if k % 2 else "icmp"),
                    "detail": None if ok else "synthetic: no answer"})
            added += await spool.put_many(batch)
        assert spool.count >= total
        window = (datetime.fromtimestamp(outage.start, timezone.utc),
                  datetime.fromtimestamp(outage.stop, timezone.utc))
        return added, window
    finally:
        await spool.close()


@pytest.mark.timeout(1200)
async def test_a_million_spooled_results_are_all_delivered_once(lab, tmp_path: Path, report) -> None:
    started = time.monotonic()
    checks = [http_check(interval=INTERVAL), icmp_check(interval=INTERVAL)]
    fleet = Fleet(lab, tmp_path, checks, agent_checks={AGENT: checks},
                  # the collector's default evaluation interval: re-evaluating every 250 ms, as the
                  # other scenarios do, takes a good part of its time from ingest during a replay
                  collector_extra={"evaluation": {"interval": "1s", "grace": "1500ms", "status_interval": "1h"}},
                  agent_extra={"collector": {"batch_size": 10_000, "request_timeout": "60s"},
                               "spool": {"max_bytes": "2GB"}})
    spool_path = tmp_path / f"spool-{AGENT}.sqlite"
    try:
        # 1. no collector: the agent probes for five rounds, and keeps what it cannot ship
        fleet.start_target()
        fleet.start_proxy()
        fleet.start_agent(AGENT)
        await fleet.wait_agents([AGENT])
        await asyncio.sleep(5 * INTERVAL)
        fleet.kill(AGENT, sig=15)
        real = fleet.spool_count(AGENT)
        assert real >= 8, real
        first_real = min(r for r in _spool_slots(spool_path))

        # 2. synthetic results before them, through the agent's Spool API, up to the backlog
        t_fill = time.monotonic()
        synthetic, window = await fill_spool(spool_path, BACKLOG, first_real)
        fill_seconds = time.monotonic() - t_fill
        spooled_ids = fleet.spool_ids(AGENT)
        assert len(spooled_ids) >= BACKLOG

        # 3. the agent runs again on that spool (still no collector), then the collector arrives
        fleet.start_agent(AGENT)
        await fleet.wait_agents([AGENT])
        await asyncio.sleep(INTERVAL)
        t_replay = time.monotonic()
        fleet.start_collector()
        await fleet.wait_collector(timeout=60)
        # poll the agent's own gauge (cheap), not the million-row databases (a scan each time)
        deadline = time.monotonic() + REPLAY_LIMIT
        while True:
            assert fleet.alive("collector") and fleet.alive(AGENT)
            waiting = (await fleet.agent_metrics(AGENT))["uptime_agent_spool_results"]
            if waiting == 0:
                break
            assert time.monotonic() < deadline, (
                f"after {time.monotonic() - t_replay:.0f}s {waiting:.0f} results still spooled "
                f"(replay at {(len(spooled_ids) - waiting) / (time.monotonic() - t_replay):.0f} results/s)\n"
                f"{fleet.log_tail('collector')}")
            await asyncio.sleep(2)
        replay_seconds = time.monotonic() - t_replay

        posts = fleet.posts()  # read before the snapshot: whatever they acknowledged is in it
        with contextlib.closing(sqlite3.connect(f"file:{fleet.db_path}?mode=ro", uri=True, timeout=30,
                                                isolation_level=None)) as db:
            db.execute("BEGIN")  # one snapshot: the agent keeps shipping new results meanwhile
            stored_ids = {row[0] for row in db.execute("SELECT result_id FROM results WHERE agent_id = ?", (AGENT,))}
            doubled = db.execute('SELECT count(*) FROM (SELECT 1 FROM results GROUP BY agent_id, "check", slot '
                                 "HAVING count(*) > 1)").fetchone()[0]
            stored = db.execute("SELECT count(*) FROM results").fetchone()[0]
        lost = len(spooled_ids - stored_ids)
        acked = {i for p in posts if p["status"] == 200 for i in p["ids"]}
        report(
            f"[a million results after a long collector absence] spooled={len(spooled_ids)} "
            f"(real={len(spooled_ids) - synthetic}, synthetic via Spool.put_many={synthetic}) "
            f"sent={len({i for p in posts for i in p['ids']})} posts={len(posts)} acknowledged={len(acked)} "
            f"stored={stored} duplicates={doubled} lost={lost} window={z(window[0])}..{z(window[1])} "
            f"fill={fill_seconds:.0f}s "
            f"replay={replay_seconds:.0f}s ({len(spooled_ids) / replay_seconds:.0f} results/s) "
            f"runtime={time.monotonic() - started:.0f}s")
        assert lost == 0
        assert doubled == 0
        assert stored == len(stored_ids) >= len(spooled_ids)
        assert acked <= stored_ids
        # the replayed history reached the rules as late results: its outage is a window now
        for policy in ("web", "ping"):
            await fleet.wait_for_windows(policy, [(z(window[0]), z(window[1]))], timeout=60)
    finally:
        fleet.stop()


def _spool_slots(path: Path) -> list[datetime]:
    import json

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [datetime.fromisoformat(json.loads(p)["slot"].replace("Z", "+00:00"))
                for (p,) in db.execute("SELECT payload FROM results")]
