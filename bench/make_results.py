"""Write a month of 60-second results from six agents as JSON Lines (the offline report's input).

    python bench/make_results.py --period 2026-10 --check app --out results.jsonl [--outage START/MINUTES ...]

About 268,000 lines for a 31-day month. Outages are given as RFC 3339 start / minutes: every agent
fails in those slots; elsewhere one agent in fifty fails at random (a flaky vantage point).
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import datetime, timedelta, timezone

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--period", default="2026-10")
    ap.add_argument("--check", default="app")
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--out", required=True)
    ap.add_argument("--outage", action="append", default=[], help="START/MINUTES, e.g. 2026-10-03T10:00:00Z/30")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    year, month = (int(x) for x in args.period.split("-"))
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    down = set()
    for spec in args.outage:
        ts, minutes = spec.split("/")
        t0 = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        for i in range(int(int(minutes) * 60 / args.interval)):
            down.add(t0 + timedelta(seconds=i * args.interval))
    step = timedelta(seconds=args.interval)
    with open(args.out, "w") as out:
        t = start
        while t < end:
            stamp = t.isoformat().replace("+00:00", "Z")
            for agent in AGENTS:
                ok = t not in down and rnd.random() > 0.02
                line = {"agent": agent, "check": args.check, "ts": stamp, "ok": ok,
                        "latency_ms": round(rnd.uniform(5, 80), 1) if ok else None,
                        "error": None if ok else "timeout"}
                out.write(json.dumps(line) + "\n")
            t += step


if __name__ == "__main__":
    main()
