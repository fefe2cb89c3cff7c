"""Month report latency for 1,000 checks (the offline evaluation core).

    .venv/bin/python bench/report.py [--checks 1000] [--sample 3] [--period 2026-10]

The issue asks for the month report of 1,000 checks "from summaries". Per-round summaries
(rollups) do not exist yet, so the shipped path is measured from raw results, as the collector
and `uptime-collector report` do it today, and a summary-based prototype is measured beside it:

  core, raw results     collector.rules.offline.evaluate_offline (rounds -> windows -> report) on
                        one check-month of raw observations held in memory: 6 agents x 44,700
                        one-minute slots (October 2026 in Europe/Zurich, 31 days + the DST hour),
                        about 268,000 results per check, two outages and a flaky agent. 1,000 such
                        check-months are 268 million results, which do not fit in this process;
                        `--sample` checks are measured and the per-check time is multiplied by
                        1,000 (the work is per check and independent, so linear).
  core, JSON Lines      the same, through `read_results` from a JSON Lines file (the CLI's input).
  collector DB, raw     collector.reporting.report_from_db on a migrated SQLite database holding
                        one check-month of raw results (as `uptime-collector report --config` and the
                        status page do).
  collector DB, round   the same after collector.store.roll_up_and_expire turned the raw rows into
  summaries             the collector's round summaries (one row per check and slot, the agents that
                        succeeded and failed; added to the tree on 2026-11-25): load_observations
                        expands them back into observations, so the evaluation cost is the same.
                        Skipped with --no-db (or when the tree has no round summaries).
  prototype, summaries  what rollups would allow, two forms: one byte per round per check (U/F/?,
                        the round verdicts the core computed), and only the runs of rounds that are
                        not UP (first round, length, verdict); the report figures (outage windows
                        with the policy's minimum duration, downtime minutes, availability,
                        coverage) from them, for all 1,000 checks. Written here in the benchmark;
                        its figures are checked equal to the core's on the sampled checks.

Policy: preset numezis-business (majority of at least 2 agents, 99.9 %, Europe/Zurich) applied to
each check as its one component. Pinned to one core.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
INTERVAL = 60
UTC = timezone.utc
GOAL_MS = 200.0


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


def summary_bytes(policy, observations, start: datetime, end: datetime) -> bytes:
    """The rollup a collector would keep: one byte per round, U (up), F (failed), ? (unknown)."""
    from collector.rules.rounds import ObservationIndex

    index = ObservationIndex(policy, observations)
    code = {"up": b"U", "failed": b"F", "unknown": b"?"}
    return b"".join(code[r.verdict.value] for r in index.rounds(start, end))


_RUN = re.compile(rb"F+")


def report_from_summary(summary: bytes, min_rounds: int, total_minutes: float, target: float) -> dict:
    """Report figures from a month's round bytes (the slots of the period; runs at the edges are
    taken as they are, which the prototype's data never crosses)."""
    downtime_rounds = 0
    outages = 0
    for m in _RUN.finditer(summary):
        n = m.end() - m.start()
        if n >= min_rounds:
            downtime_rounds += n
            outages += 1
    unknown = summary.count(b"?")
    downtime = downtime_rounds * INTERVAL / 60
    availability = (total_minutes - downtime) / total_minutes * 100
    return {"downtime_minutes": downtime, "availability_percent": availability, "outages": outages,
            "met": availability >= target, "coverage_percent": (len(summary) - unknown) / len(summary) * 100}


def runs_of(summary: bytes) -> list[tuple[int, int, bytes]]:
    """Run-length rollup: (first round, rounds, verdict) of every run that is not UP."""
    return [(m.start(), m.end() - m.start(), m.group()[:1]) for m in re.finditer(rb"F+|\?+", summary)]


def report_from_runs(runs, rounds: int, min_rounds: int, total_minutes: float, target: float) -> dict:
    downtime_rounds = outages = unknown = 0
    for _, n, code in runs:
        if code == b"F":
            if n >= min_rounds:
                downtime_rounds += n
                outages += 1
        else:
            unknown += n
    downtime = downtime_rounds * INTERVAL / 60
    availability = (total_minutes - downtime) / total_minutes * 100
    return {"downtime_minutes": downtime, "availability_percent": availability, "outages": outages,
            "met": availability >= target, "coverage_percent": (rounds - unknown) / rounds * 100}


async def db_paths(work: Path, policy, observations, period: str) -> dict:
    """report_from_db on raw rows, then on round summaries, for one check-month in SQLite."""
    from sqlalchemy import func, insert, select

    from collector import store
    from collector.db import Agent, Result, make_engine, make_sessionmaker
    from collector.migrate import upgrade_async
    from collector.reporting import report_from_db

    url = f"sqlite+aiosqlite:///{work / 'report.sqlite'}"
    await upgrade_async(url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    out: dict = {}
    try:
        async with maker() as session:
            for agent in AGENTS:
                session.add(Agent(id=agent, token_sha256=None, created_at=now))
            await session.flush()
            rows = [{"result_id": f"r{i:08d}", "agent_id": o.agent, "check": o.check, "slot": o.ts,
                     "started": o.ts, "ok": o.ok, "latency_ms": None, "status_code": None, "error": None,
                     "detail": None, "received_at": now} for i, o in enumerate(observations)]
            for i in range(0, len(rows), 20_000):
                await session.execute(insert(Result), rows[i:i + 20_000])
            await session.commit()
        async with maker() as session:
            t0 = time.perf_counter()
            rep = await report_from_db(session, policy, period)
            out["raw_ms"] = (time.perf_counter() - t0) * 1000
            out["raw_downtime"] = rep["downtime_minutes"]
        if not hasattr(store, "roll_up_and_expire"):
            return out
        async with maker() as session:
            t0 = time.perf_counter()
            while await store.roll_up_and_expire(session, datetime(2100, 1, 1, tzinfo=UTC)) > 0:
                pass
            await session.commit()
            out["rollup_ms"] = (time.perf_counter() - t0) * 1000
            out["raw_rows_left"] = await session.scalar(select(func.count()).select_from(Result))
        async with maker() as session:
            t0 = time.perf_counter()
            rep = await report_from_db(session, policy, period)
            out["summaries_ms"] = (time.perf_counter() - t0) * 1000
            out["summaries_downtime"] = rep["downtime_minutes"]
    finally:
        await engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=3, help="check-months measured through the core")
    ap.add_argument("--period", default="2026-10")
    ap.add_argument("--db", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure report_from_db on raw rows and on round summaries (SQLite, ~30 s)")
    args = ap.parse_args()

    from collector.rules.offline import evaluate_offline, read_results
    from collector.rules.periods import month_bounds
    from collector.rules.policy import load_policy

    B.header(f"month report latency for {args.checks:,} checks")
    B.pin_self({0})
    started = time.monotonic()
    work = B.workdir("report")
    base = load_policy("numezis-business", components=["chk0000"])
    start, end = month_bounds(args.period, base.tz)
    total_minutes = (end - start).total_seconds() / 60
    raw: dict = {"period": args.period, "policy": "numezis-business", "checks": args.checks, "samples": []}

    core_ms, jsonl_ms, n_obs = [], [], 0
    summaries: list[tuple[bytes, object]] = []
    for i in range(args.sample):
        name = f"chk{i:04d}"
        policy = load_policy("numezis-business", components=[name])
        obs = observations_for(name, start, end, seed=i)
        n_obs = len(obs)
        t0 = time.perf_counter()
        rep = evaluate_offline(policy, obs, args.period)
        core_ms.append((time.perf_counter() - t0) * 1000)
        if i == 0 and args.db:
            import asyncio

            raw["db"] = db = asyncio.run(db_paths(work, policy, obs, args.period))
            db["core_downtime"] = rep["downtime_minutes"]
        if i == 0:  # the CLI's path: JSON Lines in, report out
            path = work / "results.jsonl"
            with open(path, "w") as fh:
                for o in obs:
                    fh.write(json.dumps({"agent": o.agent, "check": o.check, "ts": o.ts.isoformat().replace("+00:00", "Z"),
                                         "ok": o.ok}) + "\n")
            t0 = time.perf_counter()
            evaluate_offline(policy, read_results(path, components=[name]), args.period)
            jsonl_ms.append((time.perf_counter() - t0) * 1000)
        summary = summary_bytes(policy, obs, start, end)
        min_rounds = max(1, -(-int(policy.min_duration) // INTERVAL))
        proto = report_from_summary(summary, min_rounds, total_minutes, policy.target_percent)
        proto_rle = report_from_runs(runs_of(summary), len(summary), min_rounds, total_minutes, policy.target_percent)
        same = all(abs(p["downtime_minutes"] - rep["downtime_minutes"]) < 1e-9
                   and abs(p["availability_percent"] - rep["availability_percent"]) < 1e-6
                   and p["outages"] == len(rep["outages"]) for p in (proto, proto_rle))
        raw["samples"].append({"check": name, "results": len(obs), "core_ms": core_ms[-1],
                               "core": {k: rep[k] for k in ("downtime_minutes", "availability_percent", "data_coverage_percent")},
                               "outages": len(rep["outages"]), "prototype": proto, "prototype_equals_core": same})
        summaries.append((summary, policy, runs_of(summary)))
        del obs

    # prototype: all 1,000 checks from summaries (the sampled summaries reused round-robin)
    min_rounds = max(1, -(-int(base.min_duration) // INTERVAL))
    t0 = time.perf_counter()
    for i in range(args.checks):
        summary, policy, _ = summaries[i % len(summaries)]
        report_from_summary(summary, min_rounds, total_minutes, policy.target_percent)
    proto_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    for i in range(args.checks):
        summary, policy, runs = summaries[i % len(summaries)]
        report_from_runs(runs, len(summary), min_rounds, total_minutes, policy.target_percent)
    rle_ms = (time.perf_counter() - t0) * 1000

    per_check = sum(core_ms) / len(core_ms)
    rows = [
        ["core, raw results in memory (evaluate_offline)", f"{args.sample} measured", n_obs, per_check,
         per_check * args.checks, f"{per_check * args.checks / GOAL_MS:,.0f}x over"],
        ["core, raw results from JSON Lines (CLI path)", "1 measured", n_obs, jsonl_ms[0], jsonl_ms[0] * args.checks,
         f"{jsonl_ms[0] * args.checks / GOAL_MS:,.0f}x over"],
        *([["collector DB (SQLite), raw rows: report_from_db", "1 measured", n_obs, raw["db"]["raw_ms"],
            raw["db"]["raw_ms"] * args.checks, f"{raw['db']['raw_ms'] * args.checks / GOAL_MS:,.0f}x over"]]
          if "db" in raw else []),
        *([["collector DB (SQLite), round summaries: report_from_db", "1 measured", len(summaries[0][0]),
            raw["db"]["summaries_ms"], raw["db"]["summaries_ms"] * args.checks,
            f"{raw['db']['summaries_ms'] * args.checks / GOAL_MS:,.0f}x over"]]
          if "summaries_ms" in raw.get("db", {}) else []),
        ["prototype, one byte per round (rollups)", f"{args.checks:,} measured", len(summaries[0][0]),
         proto_ms / args.checks, proto_ms, "met" if proto_ms < GOAL_MS else f"{proto_ms / GOAL_MS:.1f}x over"],
        ["prototype, runs of non-UP rounds (rollups)", f"{args.checks:,} measured", len(summaries[0][2]),
         rle_ms / args.checks, rle_ms, "met" if rle_ms < GOAL_MS else f"{rle_ms / GOAL_MS:.1f}x over"],
    ]
    agree = all(s["prototype_equals_core"] for s in raw["samples"])
    B.print_table(
        f"month report {args.period}, policy numezis-business per check, {len(AGENTS)} agents, 60 s slots",
        ["path", "checks", "inputs per check", "ms per check", f"ms for {args.checks:,} checks", f"goal < {GOAL_MS:.0f} ms"],
        rows,
        notes=[f"raw rows: {args.checks:,} x core time per check (measured on {args.sample}); the summary row is measured whole.",
               f"prototype figures equal to the core's (downtime, availability, outages) on the samples: {'yes' if agree else 'NO'}.",
               *([f"collector DB: downtime from raw rows {raw['db'].get('raw_downtime')}, from round summaries "
                  f"{raw['db'].get('summaries_downtime')}, core in memory {raw['db'].get('core_downtime')} minutes; "
                  f"roll-up of the check-month took {raw['db'].get('rollup_ms', float('nan')):,.0f} ms."] if "db" in raw else []),
               f"runtime {time.monotonic() - started:.0f} s"],
    )
    raw.update(core_ms_per_check=per_check, jsonl_ms_per_check=jsonl_ms[0], core_ms_1000=per_check * args.checks,
               prototype_bytes_ms_all=proto_ms, prototype_runs_ms_all=rle_ms, elapsed_s=time.monotonic() - started)
    B.save_json("report", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
