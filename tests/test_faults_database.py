"""Fault injection: the collector's PostgreSQL crashes and restarts while agents ship.

The test makes its own PostgreSQL cluster (initdb as the `postgres` user into a temporary
folder) and runs it inside the collector's host of the lab, next to `uptime-collector serve`;
agents on their own hosts ship to it as usual. The database is stopped with
`pg_ctl stop -m immediate` (a crash: no checkpoint, recovery at the next start) for eight
seconds under load.
"""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from netlab.fleet import Fleet, TerminalReport, http_check, icmp_check, slot_of, utcnow, z
from netlab.lab import COLLECTOR_PORT, Lab, require_lab
from netlab.postgres import Postgres, require_postgres_server
from test_faults_kills import continuity_problems

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
STEP = timedelta(seconds=INTERVAL)
AGENTS = ("us-east", "us-west", "eu-west")
DOWN_SECONDS = 8.0


@pytest.fixture
def lab():
    # skip without root, ip, iptables or the PostgreSQL server binaries; fail instead under CI
    require_lab()
    require_postgres_server()
    with Lab(AGENTS) as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return TerminalReport(capsys)


async def test_database_restarted_under_load(lab, tmp_path: Path, report) -> None:
    """1. the fleet ships to a collector on the test's PostgreSQL;
    2. PostgreSQL crashes: for eight seconds the collector answers 503 to GET /healthz and to
       POST /api/v1/results (a valid agent's valid batch), and agents keep their results;
    3. PostgreSQL comes back (crash recovery): the collector answers 200 again without a restart
       of its own, agents deliver their backlogs, nothing is lost or stored twice."""
    started = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    pg = Postgres(lab["collector"], logs).init()
    try:
        pg.start()
        pg.create_database()
        fleet = Fleet(lab, tmp_path, [http_check(interval=INTERVAL), icmp_check(interval=INTERVAL)],
                      postgres=pg, agent_extra={"collector": {"batch_size": 2}})
        try:
            await fleet.start()
            t0 = slot_of(utcnow(), INTERVAL) + STEP
            await asyncio.sleep(3 * INTERVAL)
            collector = lab["collector"]
            token = fleet.tokens[AGENTS[0]]
            probe = {"agent": AGENTS[0], "results": [{
                "id": "dbdownprobe0000000000000000000001", "check": "web", "slot": z(slot_of(utcnow(), INTERVAL)),
                "started": z(utcnow()), "ok": True, "latency_ms": 1.0, "status_code": 200, "error": None}]}
            pg.stop("immediate")
            # from when the server is down: a batch that reached the collector while pg_ctl was
            # still stopping it may have been committed and answered 200
            stopped_at = time.time()
            health, posts = [], []
            while time.time() - stopped_at < DOWN_SECONDS:
                health.append((await collector.http("GET", f"http://127.0.0.1:{COLLECTOR_PORT}/healthz", timeout=10)).status)
                posts.append((await collector.http("POST", f"http://127.0.0.1:{COLLECTOR_PORT}/api/v1/results", probe,
                                                   {"Authorization": f"Bearer {token}"}, timeout=10)).status)
                await asyncio.sleep(0.5)
            pg.start()
            restarted_at = time.time()
            assert set(health) == {503}, health
            assert set(posts) == {503}, posts
            agent_posts_down = [p for p in fleet.posts() if stopped_at + 0.5 < p["t"] < restarted_at]
            refused = sum(1 for p in agent_posts_down if p["status"] == 503)
            assert agent_posts_down and all(p["status"] == 503 for p in agent_posts_down), \
                sorted({p["status"] for p in agent_posts_down})

            await fleet.wait_for(lambda: fleet.acks_since(restarted_at) >= 3, 60, "acknowledgements after the restart")
            reply = await collector.http("GET", f"http://127.0.0.1:{COLLECTOR_PORT}/healthz")
            assert reply.status == 200
            await asyncio.sleep(2 * INTERVAL)
            end = slot_of(utcnow(), INTERVAL) - STEP
            await fleet.wait_drained(timeout=60)
            rows = fleet.stored_rows()
            assert "dbdownprobe0000000000000000000001" not in {r[0] for r in rows}  # refused with 503: not stored
            problems = continuity_problems(rows, fleet.agents, end, {}, since=t0)
            assert not problems, "\n".join(problems[:30])
            final = fleet.final_rows()  # agents stopped: nothing in flight
            problems = fleet.accounting_problems(final)  # every result spooled or sent: stored once
            assert not problems, "\n".join(problems[:30])
            figures = fleet.figures(final)
            report(figures.line(
                "PostgreSQL crash and restart under load", time.monotonic() - started,
                f" db_down={restarted_at - stopped_at:.1f}s healthz_503={len(health)} post_503={len(posts)} "
                f"agent_posts_refused_503={refused} collector_restarts=0"))
            assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
            assert figures.stored == figures.produced == figures.sent
            assert fleet.alive("collector")
        finally:
            fleet.stop()
    finally:
        pg.cleanup()
