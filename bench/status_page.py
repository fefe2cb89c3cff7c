"""The status page at 100, 1,000 (and more) services: bytes, render time, database statements.

A real collector app (its status routes) on loopback over SQLite or PostgreSQL, holding N
services with 90 days of results and one verified outage a month on one service in ten (the rest
up every day), some grouped. Fetched 20 times each, one after the other: `/`, `/api/v1/status`,
one service's page and `/history`; the first fetch of each is timed apart (a large front page is
then kept for its readers, collector/status/cache.py). The peer is nginx serving the front page's own bytes as a static file from the same
machine: the floor for a page that size.

    .venv/bin/python bench/status_page.py [--services 100,1000] [--database sqlite|postgresql]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import event, insert  # noqa: E402

from benchlib import Procs, free_port, header, percentile, print_table, remove_workdir, save_json, wait_http, workdir  # noqa: E402

from collector.api.common import STATE  # noqa: E402
from collector.config import parse_config  # noqa: E402
from collector.db import OutageWindow, Result  # noqa: E402
from collector.migrate import upgrade_async  # noqa: E402
from collector.service import CollectorState  # noqa: E402
from collector.status import setup_status_routes  # noqa: E402

UTC = timezone.utc
FETCHES = 20
GROUP_EVERY = 4     # every 4th service is in one of a few groups


async def make_state(url: str, count: int) -> CollectorState:
    checks = [{"name": f"svc{i:04d}", "type": "icmp", "interval": 60, "host": "127.0.0.1", "timeout": "2s",
               **({"group": f"region-{i % 5}"} if i % GROUP_EVERY == 0 else {})} for i in range(count)]
    config = parse_config({"database_url": url, "evaluation": {"interval": "1h"},
                           "agents": [{"id": "a1", "token": "token-a1-0123456789"}], "checks": checks}, "bench")
    state = CollectorState.create(config)
    await upgrade_async(url)
    await state.sync_config()
    now = datetime.now(UTC)
    today = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    evidence = {"policy_hash": "x", "rounds": [{"slot": today.isoformat(), "verdict": "failed", "components": {
        "c": {"verdict": "failed", "failed": ["a1"], "succeeded": [], "missing": []}}}]}
    windows, results = [], []
    for i in range(count):
        name = f"svc{i:04d}"
        if i % 10 == 0:
            for month in range(3):
                start = today - timedelta(days=30 * month + 2, hours=i % 24)
                windows.append({"policy": name, "start": start, "end": start + timedelta(minutes=7), "rule_hash": "x",
                                "evidence": evidence, "updated_at": now})
        for d in range(90):
            slot = today - timedelta(days=d) + timedelta(minutes=i % 60)
            results.append({"result_id": f"{name}-{d}", "agent_id": "a1", "check": name, "slot": slot,
                            "started": slot, "ok": True, "latency_ms": 1.0, "status_code": None, "error": None,
                            "detail": None, "received_at": now})
    async with state.sessionmaker() as session:
        if windows:
            await session.execute(insert(OutageWindow), windows)
        for lo in range(0, len(results), 5000):
            await session.execute(insert(Result), results[lo:lo + 5000])
        await session.commit()
    return state


async def measure(state: CollectorState, count: int) -> list[list]:
    app = web.Application()
    app[STATE] = state
    setup_status_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    statements: list[str] = []
    event.listen(state.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    rows = []
    front = b""
    try:
        async with aiohttp.ClientSession(auto_decompress=True) as http:
            for path in ("/", "/api/v1/status", "/services/svc0000", "/history"):
                times, size, zipped = [], 0, 0
                statements.clear()
                for _ in range(FETCHES):
                    began = time.perf_counter()
                    async with http.get(f"http://127.0.0.1:{port}{path}", headers={"Accept-Encoding": "gzip"}) as resp:
                        body = await resp.read()
                        zipped = int(resp.headers.get("Content-Length") or 0)
                        assert resp.status == 200, (path, resp.status)
                    times.append(time.perf_counter() - began)
                    size = len(body)
                if path == "/":
                    front = body
                rows.append([count, path, size, zipped or "-", round(times[0] * 1000, 1),
                             round(percentile(times[1:], 50) * 1000, 1), round(percentile(times[1:], 99) * 1000, 1),
                             len(statements)])
    finally:
        await runner.cleanup()
    return rows, front


def nginx_floor(front: bytes, work: Path) -> list:
    """nginx serving the same bytes: what a page of that size costs to deliver at all."""
    import shutil
    import urllib.request
    if not shutil.which("nginx"):
        return ["-", "-"]
    work.chmod(0o755)  # nginx's workers read the file as another user
    (work / "www").mkdir(exist_ok=True)
    (work / "www" / "index.html").write_bytes(front)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"daemon off; pid {work}/nginx.pid; error_log {work}/error.log; worker_processes 1;\n"
                    f"events {{}} http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {work}/www; }} }}\n")
    with Procs(work) as procs:
        procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(work)])
        wait_http(f"http://127.0.0.1:{port}/")
        times = []
        for _ in range(FETCHES):
            began = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
            times.append(time.perf_counter() - began)
    return [round(percentile(times, 50) * 1000, 2), round(percentile(times, 99) * 1000, 2)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", default="100,1000")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    header("Status page: bytes, render time and statements by number of services")
    table, data = [], {}
    for count in [int(c) for c in args.services.split(",")]:
        work = workdir("status-page")
        if args.database == "sqlite":
            url = f"sqlite+aiosqlite:///{work / 'c.sqlite'}"
        else:
            import asyncpg
            name = f"bench_status_{count}"
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        state = await make_state(url, count)
        rows, front = await measure(state, count)
        await state.engine.dispose()
        floor = nginx_floor(front, work)
        for row in rows:
            table.append(row + (floor if row[1] == "/" else ["", ""]))
        data[count] = rows
        remove_workdir(work)
    print_table(f"status pages ({args.database}; {FETCHES} fetches each; one service in ten with an outage a month, "
                "one in four grouped)",
                ["services", "path", "bytes", "gzip bytes", "first fetch ms", "then p50 ms", "then p99 ms",
                 f"SQL statements in {FETCHES} fetches", "nginx, same bytes p50 ms", "nginx p99 ms"], table,
                ["Past 50 services the front page is computed once and served to every reader for 5 s, then "
                 "served while a fresh one is computed (stale-while-revalidate); the first fetch is the computation."])
    save_json("status_page", {"database": args.database, "rows": data})


if __name__ == "__main__":
    asyncio.run(main())
