"""Live evaluation: the time of one evaluator pass over N checks with a contract-like policy each
(3 agents, 60 s, quorum all, 5 minutes), in SQLite and PostgreSQL, with 30 minutes of results
stored and one check in ten in an open outage.

    .venv/bin/python bench/evaluation.py [--checks 300,1000] [--backends sqlite,postgresql]

Two passes are timed per size: the first (every policy's history since its first result is
marked, as after a start) and the steady one a minute later (only each policy's newest settled
round is new: the pass that runs every interval). The peer, measured in the same run on the
same data, is the evaluator judging each policy on its own (`batch_tails = False`), which is what
the collector did before the newest rounds of many policies were judged in one transaction; the
goal is a steady pass over 1,000 checks well under a second. Both passes must store the same
windows: the script checks it.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from collector.config import parse_config  # noqa: E402
from collector.db import OutageWindow, Result  # noqa: E402
from collector.migrate import upgrade_async  # noqa: E402
from collector.service import CollectorState  # noqa: E402
from protocol.timestamps import slot_of  # noqa: E402

AGENTS = ("a1", "a2", "a3")
PG = "postgresql://postgres@127.0.0.1:5432"


async def one_run(url: str, checks: int, batched: bool) -> dict:
    http = {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}
    config = parse_config({
        "database_url": url, "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": f"c{i}", **http, "outage": {"quorum": "all", "min_duration": "5m"}} for i in range(checks)],
    }, "bench")
    await upgrade_async(url)
    state = CollectorState.create(config)
    state.evaluator.batch_tails = batched
    try:
        await state.sync_config()
        now = datetime.now(timezone.utc)
        last = slot_of(now - timedelta(seconds=5), 60) - timedelta(minutes=1)
        slots = [last - timedelta(minutes=m) for m in range(30, -1, -1)]
        rows = [dict(result_id=uuid.uuid4().hex, agent_id=a, check=f"c{i}", slot=s, started=s,
                     ok=not (i % 10 == 0 and s > last - timedelta(minutes=8)), received_at=now, degraded=False)
                for i in range(checks) for s in slots for a in AGENTS]
        async with state.sessionmaker() as session:
            for k in range(0, len(rows), 5000):
                await session.execute(insert(Result), rows[k:k + 5000])
            await session.commit()
        for i in range(checks):
            state.evaluator.mark_dirty(f"c{i}", slots[0], slots[-1])
        t = time.perf_counter()
        await state.evaluator.tick(now)
        first = time.perf_counter() - t
        # the next minute's results, then the pass that runs every interval
        later = now + timedelta(minutes=1)
        slot = last + timedelta(minutes=1)
        rows = [dict(result_id=uuid.uuid4().hex, agent_id=a, check=f"c{i}", slot=slot, started=slot,
                     ok=i % 10 != 0, received_at=later, degraded=False) for i in range(checks) for a in AGENTS]
        async with state.sessionmaker() as session:
            await session.execute(insert(Result), rows)
            await session.commit()
        for i in range(checks):
            state.evaluator.mark_dirty(f"c{i}", slot)
        t = time.perf_counter()
        await state.evaluator.tick(later)
        steady = time.perf_counter() - t
        async with state.sessionmaker() as session:
            windows = sorted((w.policy, w.start, w.end) for w in (await session.scalars(select(OutageWindow))).all())
        return {"first": first, "steady": steady, "windows": windows}
    finally:
        await state.engine.dispose()


def fresh_database(backend: str, work: Path, tag: str) -> tuple[str, callable]:
    if backend == "sqlite":
        path = work / f"{tag}.db"
        return f"sqlite+aiosqlite:///{path}", lambda: path.unlink(missing_ok=True)
    name = f"bench_eval_{tag}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name}"], check=True, capture_output=True)
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return (f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}",
            lambda: subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name}"], capture_output=True))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", default="300,1000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    B.header("Live evaluation: one pass over N contract policies")
    rows, data = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            for n in (int(x) for x in args.checks.split(",")):
                figures = {}
                for batched in (True, False):
                    url, drop = fresh_database(backend, work, f"{n}_{int(batched)}")
                    try:
                        figures[batched] = await one_run(url, n, batched)
                    finally:
                        drop()
                same = figures[True]["windows"] == figures[False]["windows"]
                rows.append([backend, n, figures[True]["steady"], figures[False]["steady"],
                             figures[False]["steady"] / figures[True]["steady"],
                             figures[True]["first"], figures[False]["first"], "yes" if same else "NO"])
                data[f"{backend}-{n}"] = {k: {"first": v["first"], "steady": v["steady"]} for k, v in
                                          (("batched", figures[True]), ("per_policy", figures[False]))}
    B.print_table("evaluator pass (seconds)",
                  ["backend", "checks", "steady: batched", "steady: per policy", "x faster",
                   "first: batched", "first: per policy", "same windows"], rows,
                  ["steady: the pass a minute later, only the newest round new (one check in ten in an outage open "
                   "for 8 minutes)",
                   "first: every policy's 30 minutes marked, as after a start", B.busy_elsewhere()])
    B.save_json("evaluation", data)


if __name__ == "__main__":
    asyncio.run(main())
