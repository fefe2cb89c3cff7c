"""Evaluation shared by collectors: N collector processes on one PostgreSQL database share the
evaluation of 10,000 checks (a policy each, 3 agents, 60 s, quorum all, 5 minutes; 10 minutes of
results stored, one check in ten in an open outage) through the shard leases.

    .venv/bin/python bench/shards.py [--checks 10000] [--collectors 1,3] [--shards 16]

For each N, N processes (each a CollectorState as `serve` builds it, claiming shards as its
evaluate job does) claim shards until the split is stable; then all judge their shards at once:
the first pass (10 minutes of history each, as after a start) and the steady one a minute later
(only the newest round new). The table shows, per collector, the shards and policies it held
and its pass times; the peer is one collector holding every shard (N = 1) on the same data. The
windows stored must be the same whatever N: the script checks it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from collector.config import parse_config  # noqa: E402
from collector.db import Lease, OutageWindow, Result, make_engine, make_sessionmaker  # noqa: E402
from collector.migrate import upgrade_async  # noqa: E402
from collector.service import CollectorState  # noqa: E402
from collector.shards import SHARD_PREFIX  # noqa: E402
from protocol.timestamps import slot_of  # noqa: E402

AGENTS = ("a1", "a2", "a3")
PG = "postgresql://postgres@127.0.0.1:5432"
CLAIM_EVERY = 0.5  # seconds between a child's claiming rounds, as an evaluation interval would
LEASE_TTL = 60  # a pass over thousands of policies holds a child's event loop: no shard expires meanwhile


def config(url: str, checks: int, shards: int):
    http = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}
    return parse_config({
        "database_url": url, "evaluation": {"interval": "1h", "grace": "5s", "shards": shards},
        "lease_ttl": f"{LEASE_TTL}s",
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": f"c{i}", **http, "outage": {"quorum": "all", "min_duration": "5m"}} for i in range(checks)],
    }, "bench")


# --- a collector process ---------------------------------------------------------------------


async def child(url: str, checks: int, shards: int) -> None:
    """Reads commands on stdin (`first NOW`, `steady NOW SLOT`, `quit`), answers JSON lines."""
    state = CollectorState.create(config(url, checks, shards))
    await state.reload_checks(force=True)

    def say(**kw) -> None:
        print(json.dumps(kw), flush=True)

    async def claiming() -> None:
        while True:
            await state.hold_shards(datetime.now(timezone.utc))
            await asyncio.sleep(CLAIM_EVERY)

    claims = asyncio.create_task(claiming())
    say(event="ready", holder=state.instance_id)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            now = datetime.fromisoformat(line[1])
            mine = state.policies_of(state.shards_held)
            if line[0] == "first":
                for name in mine:
                    state.evaluator.mark_dirty(name, now - timedelta(minutes=11), now - timedelta(minutes=1))
            else:
                for name in mine:
                    state.evaluator.mark_dirty(name, datetime.fromisoformat(line[2]))
            cpu, t = time.process_time(), time.perf_counter()
            await state.evaluator.tick(now, only=mine)
            say(event=line[0], seconds=time.perf_counter() - t, cpu=time.process_time() - cpu,
                shards=sorted(state.shards_held), policies=len(mine))
    finally:
        claims.cancel()
        await state.release_leases()
        await state.engine.dispose()


# --- the run ---------------------------------------------------------------------------------


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql],
                   check=True, capture_output=True)


def url_of(name: str) -> str:
    return f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


async def populate(name: str, checks: int, shards: int, now: datetime) -> datetime:
    """Checks, agents and 11 minutes of results; returns the last slot stored."""
    url = url_of(name)
    await upgrade_async(url)
    state = CollectorState.create(config(url, checks, shards))
    try:
        await state.sync_config()
        last = slot_of(now - timedelta(seconds=5), 60) - timedelta(minutes=1)
        slots = [last - timedelta(minutes=m) for m in range(10, -1, -1)]
        rows = [dict(result_id=uuid.uuid4().hex, agent_id=a, check=f"c{i}", slot=s, started=s,
                     ok=not (i % 10 == 0 and s > last - timedelta(minutes=8)), received_at=now, degraded=False)
                for i in range(checks) for s in slots for a in AGENTS]
        async with state.sessionmaker() as session:
            for k in range(0, len(rows), 10_000):
                await session.execute(insert(Result), rows[k:k + 10_000])
            await session.commit()
        return last
    finally:
        await state.engine.dispose()


async def held_by(url: str) -> Counter:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = (await session.scalars(select(Lease).where(Lease.name.startswith(SHARD_PREFIX)))).all()
        now = datetime.now(timezone.utc)
        return Counter(r.holder for r in rows if r.expires_at >= now)
    finally:
        await engine.dispose()


async def windows_of(url: str) -> list:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return sorted((w.policy, w.start, w.end) for w in (await session.scalars(select(OutageWindow))).all())
    finally:
        await engine.dispose()


async def one_run(template: str, n: int, args, now: datetime, last: datetime) -> dict:
    name = f"bench_shards_{n}"
    psql(f"DROP DATABASE IF EXISTS {name}")
    psql(f"CREATE DATABASE {name} TEMPLATE {template}")
    url = url_of(name)
    procs = [subprocess.Popen(B.taskset(None, [sys.executable, __file__, "--child", url, "--checks", str(args.checks),
                                               "--shards", str(args.shards)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=B.ROOT)
             for _ in range(n)]
    loop = asyncio.get_running_loop()

    async def read(p: subprocess.Popen) -> dict:
        line = await loop.run_in_executor(None, p.stdout.readline)
        if not line:
            raise RuntimeError(f"collector process {p.pid} ended (exit {p.wait()})")
        return json.loads(line)

    try:
        t = time.perf_counter()
        holders = [(await read(p))["holder"] for p in procs]
        ready = time.perf_counter() - t
        # the split is stable: every shard held, no change for three claiming rounds
        t, stable, previous = time.perf_counter(), 0, None
        while stable < 3:
            await asyncio.sleep(CLAIM_EVERY)
            counts = await held_by(url)
            stable = stable + 1 if counts == previous and sum(counts.values()) == args.shards else 0
            previous = counts
            if time.perf_counter() - t > 60:
                raise RuntimeError(f"the shards never settled: {counts}")
        settle = time.perf_counter() - t
        figures = {}
        later = now + timedelta(minutes=1)
        for command in ("first", "steady"):
            if command == "steady":  # the next minute's results, then the pass that runs every interval
                slot = last + timedelta(minutes=1)
                rows = [dict(result_id=uuid.uuid4().hex, agent_id=a, check=f"c{i}", slot=slot, started=slot,
                             ok=i % 10 != 0, received_at=later, degraded=False)
                        for i in range(args.checks) for a in AGENTS]
                engine = make_engine(url)
                async with make_sessionmaker(engine)() as session:
                    for k in range(0, len(rows), 10_000):
                        await session.execute(insert(Result), rows[k:k + 10_000])
                    await session.commit()
                await engine.dispose()
                line = f"steady {later.isoformat()} {slot.isoformat()}\n"
            else:
                line = f"first {now.isoformat()}\n"
            t = time.perf_counter()
            for p in procs:
                p.stdin.write(line)
                p.stdin.flush()
            figures[command] = [await read(p) for p in procs]
            figures[command + "_wall"] = time.perf_counter() - t
        for p in procs:
            p.stdin.write("quit\n")
            p.stdin.flush()
        for p in procs:
            p.wait(60)
        return {"holders": holders, "ready": ready, "settle": settle, **figures, "windows": await windows_of(url)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--collectors", default="1,3")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await child(args.child, args.checks, args.shards)
        return
    B.header(f"Evaluation shared by collectors: {args.checks:,} checks, {args.shards} shards")
    template = "bench_shards_template"
    psql(f"DROP DATABASE IF EXISTS {template}")
    psql(f"CREATE DATABASE {template}")
    now = datetime.now(timezone.utc)
    rows, data, windows = [], {}, {}
    try:
        t = time.perf_counter()
        last = await populate(template, args.checks, args.shards, now)
        print(f"stored {args.checks * len(AGENTS) * 11:,} results in {time.perf_counter() - t:.1f} s", flush=True)
        for n in (int(x) for x in args.collectors.split(",")):
            run = await one_run(template, n, args, now, last)
            windows[n] = run.pop("windows")
            data[str(n)] = run
            for i, (first, steady) in enumerate(zip(run["first"], run["steady"])):
                rows.append([n, i + 1, len(steady["shards"]), f"{len(steady['shards']) / args.shards:.0%}",
                             steady["policies"], first["seconds"], steady["seconds"], steady["cpu"],
                             run["first_wall"], run["steady_wall"], run["settle"]])
    finally:
        psql(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    same = len({json.dumps(w, default=str) for w in windows.values()}) == 1
    B.print_table("shards held and evaluator pass per collector (seconds)",
                  ["collectors", "collector", "shards", "of all", "policies", "first pass", "steady pass",
                   "steady CPU", "first: all done", "steady: all done", "split settled in"], rows,
                  ["first: each collector's 10 minutes of history, all collectors at once; steady: a minute later, "
                   "the newest round only (one check in ten in an outage open for 8 minutes)",
                   f"windows stored the same whatever the number of collectors: {'yes' if same else 'NO'} "
                   f"({len(next(iter(windows.values()), []))} windows)",
                   f"{os.cpu_count()} cores shared by the collectors and PostgreSQL; {B.busy_elsewhere()}"])
    B.save_json("shards", data)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
