"""Month report latency: from the evaluator's rollups next to the raw path, on SQLite and PostgreSQL.

    .venv/bin/python bench/report.py [--checks 1000] [--period 2026-10] [--backends sqlite,postgresql]

One check-month of raw results (6 agents x 44,700 one-minute slots of October 2026 in
Europe/Zurich, about 268,000 results, two outages and a flaky agent) is stored in a migrated
database and judged by the real live evaluator (collector.evaluator.LiveEvaluator), which writes
its rollups: the runs of non-UP rounds, the verified windows with their evidence, the progress.
The same rollups are then copied under 999 more policy names (each with its own check and a
first result), so that 1,000 policies have a judged month each. Measured, per back end:

  raw path, one policy       collector.reporting._raw_report_from_db: the month's results read
                             and judged afresh (what every report cost before the rollups); the
                             figure for 1,000 is 1,000 x that (1,000 check-months of raw results,
                             268 million rows, are not stored here).
  rollups, one policy        collector.rollup_reports.month_report (what report_from_db now does
                             where the rollups cover the month), split into its reads and the
                             rules core (build_report on the rounds the runs give, as spans of
                             one verdict: collector.rules.report.RoundSpans).
  rollups, 1,000 policies    collector.rollup_reports.month_reports: all 1,000 reports, with the
                             reads batched (a handful of queries for all policies).

The rollup report is checked equal to the raw one (the whole dict). Policy: preset
numezis-business per check. Pinned to one core; PostgreSQL at 127.0.0.1:5432 (trust).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
INTERVAL = 60
UTC = timezone.utc
GOAL_ONE_MS = 50.0      # issue goal: a month report for any policy under 50 ms
GOAL_ALL_MS = 200.0     # and for all 1,000 under 200 ms in total
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def observations_for(check: str, start: datetime, end: datetime, seed: int):
    """A check-month: two outages (all agents fail), elsewhere one agent in fifty fails."""
    from collector.rules.model import Observation

    rnd = random.Random(seed)
    slots = int((end - start).total_seconds() // INTERVAL)
    outages = set()
    for _ in range(2):
        first = rnd.randrange(0, slots - 120)
        outages.update(range(first, first + rnd.randrange(3, 90)))
    obs = []
    append = obs.append
    for k in range(slots):
        ts = start + timedelta(seconds=k * INTERVAL)
        down = k in outages
        for agent in AGENTS:
            append(Observation(agent, check, ts, not down and rnd.random() > 0.02))
    return obs


async def _postgres_database() -> tuple[str, str]:
    import asyncpg

    name = f"uptime_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(f"{POSTGRES}/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{POSTGRES.replace('postgresql://', 'postgresql+asyncpg://')}/{name}", name


async def _drop_postgres(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(f"{POSTGRES}/postgres", timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def step(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _timed(samples: list[float]):
    class _T:
        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            samples.append((time.perf_counter() - self.t0) * 1000)
    return _T()


async def measure(url: str, checks: int, period: str, repeat: int) -> dict:
    from sqlalchemy import insert, select

    from collector import reporting, rollup_reports, store
    from collector.db import Agent, OutageWindow, PolicyProgress, Result, RoundRun, make_engine, make_sessionmaker
    from collector.evaluator import LiveEvaluator, LivePolicy
    from collector.migrate import upgrade_async
    from collector.rules.periods import month_bounds
    from collector.rules.policy import load_policy
    from collector.rules.report import build_report

    await upgrade_async(url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    base = load_policy("numezis-business")
    names = [f"chk{i:04d}" for i in range(checks)]
    policies = [base.with_overrides(name=n, components=[n]) for n in names]
    start, end = month_bounds(period, base.tz)
    now = end + timedelta(hours=1)
    out: dict = {}
    try:
        # 1. one check-month of raw results, judged by the live evaluator
        step(f"{url.split(':')[0]}: storing one check-month of results")
        observations = observations_for(names[0], start, end, seed=0)
        async with maker() as session:
            for agent in AGENTS:
                session.add(Agent(id=agent, token_sha256=None, created_at=now))
            await session.flush()
            rows = [{"result_id": f"r{i:08d}", "agent_id": o.agent, "check": o.check, "slot": o.ts, "started": o.ts,
                     "ok": o.ok, "latency_ms": None, "status_code": None, "error": None, "detail": None,
                     "received_at": now} for i, o in enumerate(observations)]
            t0 = time.perf_counter()
            for i in range(0, len(rows), 20_000):
                await session.execute(insert(Result), rows[i:i + 20_000])
            # the other checks: a first result each (their rollups are copies of the first one's)
            await session.execute(insert(Result), [
                {"result_id": f"f{n}", "agent_id": AGENTS[0], "check": n, "slot": start, "started": start, "ok": True,
                 "latency_ms": None, "status_code": None, "error": None, "detail": None, "received_at": now}
                for n in names[1:]])
            await session.commit()
            out["load_s"] = time.perf_counter() - t0
        out["results"] = len(observations)
        del rows
        step("judging them with the live evaluator")
        evaluator = LiveEvaluator(maker, [LivePolicy(policies[0], {names[0]: list(AGENTS)})], grace=30)
        t0 = time.perf_counter()
        for _ in range(10):
            await evaluator.tick(now)
            if not evaluator.policies[0].dirty:
                break
        out["evaluate_s"] = time.perf_counter() - t0
        async with maker() as session:
            runs = (await session.scalars(select(RoundRun).where(RoundRun.policy == names[0]))).all()
            windows = (await session.scalars(select(OutageWindow).where(OutageWindow.policy == names[0]))).all()
            progress = await session.get(PolicyProgress, names[0])
            out.update(runs=len(runs), windows=len(windows))
            for chunk in range(1, checks, 200):
                batch = names[chunk:chunk + 200]
                await session.execute(insert(RoundRun), [{"policy": n, "start": r.start, "end": r.end, "verdict": r.verdict}
                                                         for n in batch for r in runs])
                if windows:
                    await session.execute(insert(OutageWindow), [
                        {"policy": n, "start": w.start, "end": w.end, "rule_hash": policies[names.index(n)].content_hash(),
                         "evidence": w.evidence, "updated_at": w.updated_at} for n in batch for w in windows])
                await session.execute(insert(PolicyProgress), [{"policy": n, "judged_until": progress.judged_until}
                                                               for n in batch])
            await session.commit()

        # 2. the raw path, one policy
        step(f"{len(runs)} runs, {len(windows)} windows copied to {checks} policies; measuring")
        raw_ms: list[float] = []
        for _ in range(max(1, repeat // 2)):
            async with maker() as session:
                with _timed(raw_ms):
                    raw = await reporting._raw_report_from_db(session, policies[0], period, [], None, now)
        # 3. the rollups, one policy (reads, then the rules core alone)
        one_ms: list[float] = []
        core_ms: list[float] = []
        for _ in range(repeat):
            async with maker() as session:
                with _timed(one_ms):
                    mine = await rollup_reports.month_report(session, policies[0], period, now=now)
                coverage = (await rollup_reports.coverage_of(session, [policies[0]]))[names[0]]
                got_runs = (await store.runs_between(session, [names[0]], start, end)).get(names[0], [])
                got_windows = (await store.windows_between(session, [names[0]], start, end)).get(names[0], [])
                with _timed(core_ms):
                    rounds = rollup_reports.spans_from_runs(policies[0], got_runs, max(start, coverage.first_slot), end)
                    build_report(policies[0], period, rounds, [rollup_reports.window_of(w) for w in got_windows], [],
                                 now=now)
        out["equal"] = mine == raw
        out["outages"] = len(raw["outages"])
        # 4. the rollups, all policies at once
        all_ms: list[float] = []
        for _ in range(max(1, repeat // 3)):
            async with maker() as session:
                with _timed(all_ms):
                    reports = await rollup_reports.month_reports(session, policies, {n: period for n in names}, now=now)
        out["all_answered"] = sum(1 for r in reports.values() if r is not None)
        out.update(raw_ms=min(raw_ms), one_ms=min(one_ms), core_ms=min(core_ms), all_ms=min(all_ms))
    finally:
        await engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--period", default="2026-10")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is shown")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()

    B.header(f"month report latency for {args.checks:,} policies, rollups next to raw results")
    B.pin_self({0})
    started = time.monotonic()
    work = B.workdir("report")
    results: dict = {"period": args.period, "policy": "numezis-business", "checks": args.checks, "backends": {}}
    rows = []
    for backend in args.backends.split(","):
        pg_name = None
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{work / 'report.sqlite'}"
        else:
            url, pg_name = asyncio.run(_postgres_database())
        try:
            r = asyncio.run(measure(url, args.checks, args.period, args.repeat))
        finally:
            if pg_name:
                asyncio.run(_drop_postgres(pg_name))
        results["backends"][backend] = r
        n = args.checks
        verdict = lambda ms, goal: "met" if ms < goal else f"{ms / goal:,.1f}x over"  # noqa: E731
        rows += [
            [backend, "raw results, one policy (_raw_report_from_db)", r["results"], r["raw_ms"],
             r["raw_ms"] * n, verdict(r["raw_ms"], GOAL_ONE_MS), verdict(r["raw_ms"] * n, GOAL_ALL_MS)],
            [backend, "rollups, one policy (month_report)", r["runs"] + r["windows"], r["one_ms"], r["one_ms"] * n,
             verdict(r["one_ms"], GOAL_ONE_MS), verdict(r["one_ms"] * n, GOAL_ALL_MS)],
            [backend, "  of which the rules core (spans from runs + build_report)", r["runs"] + r["windows"],
             r["core_ms"], r["core_ms"] * n, "", ""],
            [backend, f"rollups, {n:,} policies batched (month_reports)", r["runs"] + r["windows"], r["all_ms"] / n,
             r["all_ms"], verdict(r["all_ms"] / n, GOAL_ONE_MS), verdict(r["all_ms"], GOAL_ALL_MS)],
        ]
    B.print_table(
        f"month report {args.period}, numezis-business per check, {len(AGENTS)} agents, 60 s slots",
        ["db", "path", "rows read per policy", "ms per policy", f"ms for {args.checks:,}",
         f"goal one < {GOAL_ONE_MS:.0f} ms", f"goal all < {GOAL_ALL_MS:.0f} ms"],
        rows,
        notes=[*(f"{b}: {r['results']:,} results judged by the live evaluator in {r['evaluate_s']:.1f} s into "
                 f"{r['runs']} runs and {r['windows']} windows; rollup report equal to the raw one: "
                 f"{'yes' if r['equal'] else 'NO'}; answered from rollups: {r['all_answered']:,}/{args.checks:,}"
                 for b, r in results["backends"].items()),
               "raw, 1,000: 1,000 x one policy (the raw rows of 1,000 check-months are not stored)",
               f"runtime {time.monotonic() - started:.0f} s"],
    )
    results["elapsed_s"] = time.monotonic() - started
    B.save_json("report", results)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
