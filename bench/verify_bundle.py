"""Time to verify a month's evidence bundle offline (`uptime-verify`).

    .venv/bin/python bench/verify_bundle.py [--agents 6] [--period 2026-11] [--results-per-batch 1]

One check probed every 60 s by six agents for a month (November 2026) plus the day the report
reads beyond each end: about 276,000 results. Each agent ships every result in a batch of its
own (the agent's 1 s flush against a 60 s check), so the bundle holds as many signed batches as
results: the hardest case for the verifier. One outage of 45 minutes on all agents, one agent
missing 0.5 % of its slots, one planned maintenance record. Built with evidence.build (the agents'
signing and the collector's log and export, in memory), written to a file, then verified by the
real command line (`uptime-verify FILE`, a fresh process: reading the file included), and once
more in-process with the time of each step (`--all-signatures`: once more verifying every
signature, not only the chains' heads). The goal: under 30 s.

Raw figures go to bench/out/verify_bundle.json. Nothing else is started; the temporary folder is
deleted (BENCH_KEEP=1 keeps it).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.rules import Observation, load_policy  # noqa: E402
from collector.rules.periods import month_bounds  # noqa: E402
from evidence.build import bundle_from_observations, evidence_margin  # noqa: E402
from evidence.bundle import load_bundle, save_bundle  # noqa: E402
from evidence.keys import generate_private_key  # noqa: E402
from evidence.verify import verify_bundle  # noqa: E402

GOAL_SECONDS = 30.0
UTC = timezone.utc


def observations(policy, period: str, agents: list[str], rng: random.Random) -> list[Observation]:
    start, end = month_bounds(period, policy.tz)
    margin = evidence_margin(policy)
    step = timedelta(seconds=policy.interval)
    t = start - margin
    outage = (start + timedelta(days=9, hours=3), start + timedelta(days=9, hours=3, minutes=45))
    out = []
    while t < end + margin:
        down = outage[0] <= t < outage[1]
        for agent in agents:
            if agent == agents[-1] and rng.random() < 0.005:
                continue  # a flaky agent: its slot is missing
            out.append(Observation(agent, "web", t, not down))
        t += step
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--period", default="2026-11")
    parser.add_argument("--results-per-batch", type=int, default=1)
    parser.add_argument("--all-signatures", action="store_true",
                        help="also time verifying every batch's signature (about 3x longer)")
    args = parser.parse_args()
    rng = random.Random(260_000)
    policy = load_policy("numezis-business", components=["web"])
    agents = [f"agent-{i}" for i in range(1, args.agents + 1)]
    start, _ = month_bounds(args.period, policy.tz)
    maintenance = [{"id": 1, "policy": policy.name, "kind": "planned", "start": start + timedelta(days=20, hours=2),
                    "end": start + timedelta(days=20, hours=3), "note": "database upgrade",
                    "recorded_at": start + timedelta(days=15), "recorded_by": "api", "author": "ops"}]
    obs = observations(policy, args.period, agents, rng)
    keys = {a: generate_private_key() for a in agents}
    t0 = time.perf_counter()
    bundle, keeper = bundle_from_observations(policy, args.period, obs, agent_keys=keys, log_key=generate_private_key(),
                                              maintenance=maintenance, results_per_batch=args.results_per_batch)
    built = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        path = tmp / "bundle.json"
        t0 = time.perf_counter()
        save_bundle(bundle, path)
        written = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        del bundle, keeper

        t0 = time.perf_counter()
        cli = subprocess.run([str(Path(sys.executable).parent / "uptime-verify"), str(path)], capture_output=True,
                             text=True)
        cli_seconds = time.perf_counter() - t0
        if cli.returncode != 0:
            print(cli.stdout, cli.stderr)
            raise SystemExit(f"uptime-verify exited {cli.returncode}")

        t0 = time.perf_counter()
        loaded = load_bundle(path)
        load_seconds = time.perf_counter() - t0
        steps: dict[str, float] = {}
        t0 = time.perf_counter()
        verified = verify_bundle(loaded, timings=steps)
        check_seconds = time.perf_counter() - t0
        all_sigs_seconds = None
        if args.all_signatures:
            t0 = time.perf_counter()
            verify_bundle(loaded, all_signatures=True)
            all_sigs_seconds = time.perf_counter() - t0
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)

    load_avg = os.getloadavg()[0]
    rows = [
        ("results (component, unique)", f"{verified.results:,}"),
        ("signed batches", f"{verified.batches:,}"),
        ("agents", str(verified.agents)),
        ("bundle size", f"{size_mb:,.1f} MB"),
        ("build (sign, log, export; not timed for the goal)", f"{built:,.1f} s"),
        ("write the file", f"{written:,.1f} s"),
        ("uptime-verify FILE (fresh process, all checks)", f"{cli_seconds:,.1f} s"),
        ("  in-process: read and parse the file", f"{load_seconds:,.1f} s"),
        ("  in-process: every check and the recomputed report", f"{check_seconds:,.1f} s"),
        *[(f"    {name}", f"{seconds:,.2f} s") for name, seconds in steps.items()],
        ("  signatures checked (the rest vouched for by the chains)", f"{verified.signatures_checked:,}"),
        ("  in-process with --all-signatures", "not run (--all-signatures)" if all_sigs_seconds is None
         else f"{all_sigs_seconds:,.1f} s"),
        ("goal", f"< {GOAL_SECONDS:.0f} s: {'met' if cli_seconds < GOAL_SECONDS else 'MISSED'}"),
        ("load average (1 min) at the end, 2 cores shared", f"{load_avg:.1f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"verify a month's bundle: policy {policy.name}, one check every {policy.interval:g} s, "
          f"{args.agents} agents, {args.results_per_batch} result(s) per batch")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "verify_bundle.json").write_text(json.dumps({
        "results": verified.results, "batches": verified.batches, "agents": verified.agents, "bundle_mb": size_mb,
        "build_seconds": built, "cli_seconds": cli_seconds, "load_seconds": load_seconds,
        "check_seconds": check_seconds, "steps": steps, "all_signatures_seconds": all_sigs_seconds,
        "signatures_checked": verified.signatures_checked, "load_average": load_avg,
        "figures": dict(verified.figures())}, indent=2))
    return 0 if cli_seconds < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
