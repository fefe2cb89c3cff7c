"""Agent scheduling: 10,000 checks a minute with check-start lateness p99 under 1 s.

    .venv/bin/python bench/scheduling.py [--checks 10000] [--variants shipped,prototype]

10,000 HTTP checks at a 60 s interval against a trivial target (one nginx worker answering
`200 ok` on 16 loopback addresses of its own per variant, core 1). Slots are wall-clock aligned, so all 10,000 checks
are due at the same instant, each whole minute: the test is whether the agent starts them all
within a second of that instant. The agent runs pinned to core 0 and ships to a stub collector
(bench/sink.py, core 1) that keeps each result's exact lateness (started - slot).

Each variant is started, left to settle, and measured on one whole minute's burst:
  shipped      `uptime-agent run` as released.
  prototype    bench/agent_variant.py --uvloop --shared-connector --batched-spool --grouped-schedule
               (the changes recommended in bench/RESULTS.md; not the shipped agent).
  noop         `uptime-agent`'s own pipeline with a prober that returns at once (scheduler + spool +
               metrics only: bench/agent_variant.py --noop-prober).
  prototype-noop  the prototype's scheduling changes with the no-op prober.
Peer: bare asyncio, the floor of this machine and interpreter: 10,000 loop.call_at timers at one
instant, each starting a task that records its lateness (no scheduler library, no I/O).

Each variant waits for its next whole minute, so the run takes about 2 minutes for two variants.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PROBE_CPU, OTHER_CPU = "0", "1"
INTERVAL = 60
LEAD = 15.0  # seconds between the agent being ready and the minute it is measured on
VARIANTS = {
    "shipped": [],
    "prototype": ["--uvloop", "--shared-connector", "--batched-spool", "--grouped-schedule"],
    "noop": ["--noop-prober"],
    "prototype-noop": ["--uvloop", "--batched-spool", "--grouped-schedule", "--noop-prober"],
}

BARE_ASYNCIO = """
import asyncio, json, math, time
N = {n}
async def main():
    loop = asyncio.get_running_loop()
    slot = math.ceil(time.time()) + 2.0
    at = loop.time() + (slot - time.time())
    late = []
    async def probe():
        late.append(time.time() - slot)
        await asyncio.sleep(0)
    def start():
        loop.create_task(probe())
    for _ in range(N):
        loop.call_at(at, start)
    while len(late) < N and loop.time() < at + 30:
        await asyncio.sleep(0.05)
    late.sort()
    pick = lambda q: late[min(len(late) - 1, max(0, math.ceil(q * len(late)) - 1))]
    print(json.dumps({{"results": len(late), "p50": pick(0.5), "p99": pick(0.99), "max": late[-1],
                      "over_1s": sum(1 for x in late if x >= 1.0)}}))
asyncio.run(main())
"""


def bare_asyncio(n: int) -> dict:
    out = subprocess.run(B.taskset(PROBE_CPU, [sys.executable, "-c", BARE_ASYNCIO.format(n=n)]),
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def agent_config(work: Path, urls: list[str], n: int, sink_port: int, metrics_port: int, name: str) -> Path:
    checks = [{"name": f"web{i:05d}", "type": "http", "interval": f"{INTERVAL}s", "url": urls[i % len(urls)],
               "timeout": "5s"} for i in range(n)]
    cfg = {
        "agent": {"id": "bench"},
        "collector": {"url": f"http://127.0.0.1:{sink_port}", "token": "bench-token-0000000001", "fetch_checks": False},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "spool": {"path": str(work / f"spool-{name}-{{agent_id}}.sqlite")},
        "checks": checks,
    }
    path = work / f"agent-{name}.yml"
    path.write_text(json.dumps(cfg))
    return path


def run_variant(procs: B.Procs, work: Path, n: int, sink_port: int, name: str, block: int) -> dict:
    # a target of its own per variant: 16 fresh loopback addresses, so that this burst never meets
    # the previous burst's TIME_WAIT sockets (10,000 connections each)
    nginx_dir = work / f"nginx-{name}"
    nginx_dir.mkdir()
    urls = B.start_nginx(procs, nginx_dir, B.target_addresses(16, block), B.free_port(), cpus=OTHER_CPU)
    mport = B.free_port()
    config = agent_config(work, urls, n, sink_port, mport, name)
    flags = VARIANTS[name]
    argv = ([sys.executable, str(B.ROOT / "bench" / "agent_variant.py"), "--config", str(config), *flags] if flags
            else [str(B.BIN / "uptime-agent"), "run", "--config", str(config), "--log-level", "error"])
    t0 = time.time()
    proc = procs.start(f"agent-{name}", argv, cpus=PROBE_CPU)
    try:
        B.wait_http(f"http://127.0.0.1:{mport}/healthz", 120, proc)
        startup = time.time() - t0
        slot = math.ceil((time.time() + LEAD) / INTERVAL) * INTERVAL
        B.console.print(f"  {name}: {n:,} checks scheduled in {startup:.1f} s; measuring the burst of "
                        f"{time.strftime('%H:%M:%S', time.gmtime(slot))} UTC (in {slot - time.time():.0f} s)", highlight=False)
        time.sleep(max(0.0, slot - 1 - time.time()))
        c0, rss0 = B.cpu_seconds(proc.pid), B.rss_mib(proc.pid)
        stats = {}
        deadline = slot + 45
        while time.time() < deadline:  # until every result of that slot reached the stub collector
            time.sleep(1.0)
            stats = json.loads(B.http_get(f"http://127.0.0.1:{sink_port}/bench/stats?from={slot}&to={slot + 1}"))
            if stats["results"] >= n:
                break
        done_after = time.time() - slot
        cpu = B.cpu_seconds(proc.pid) - c0
        metrics = B.scrape(f"http://127.0.0.1:{mport}/metrics")
        rss = B.rss_mib(proc.pid)
    finally:
        procs.stop(proc, grace=15)
    late = stats.get("lateness", {})
    return {
        "variant": name, "flags": " ".join(flags), "checks": n, "startup_s": startup, "slot": slot,
        "results": stats.get("results", 0), "ok": stats.get("ok", 0),
        "p50": late.get("p50"), "p99": late.get("p99"), "max": late.get("max"), "over_1s": late.get("over_1s"),
        "missed_slots": B.total(metrics, "uptime_agent_missed_slots_total"),
        "failures": {r: B.total(metrics, "uptime_agent_probes_total", result=r)
                     for r in ("connect", "timeout", "status", "internal") if B.total(metrics, "uptime_agent_probes_total", result=r)},
        "all_shipped_after_s": done_after, "cpu_s_burst": cpu, "rss_mib_before": rss0, "rss_mib_after": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=10_000)
    ap.add_argument("--variants", default="shipped,prototype", help="comma-separated: shipped, prototype, noop, prototype-noop")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} (one of {', '.join(VARIANTS)})")

    B.header(f"agent scheduling: {args.checks:,} checks a minute, aligned slots")
    B.pin_self({int(OTHER_CPU)})
    started = time.monotonic()
    work = B.workdir("sched")
    raw: dict = {"checks": args.checks, "interval_s": INTERVAL, "runs": []}
    raw["bare_asyncio"] = peer = bare_asyncio(args.checks)
    with B.Procs(work) as procs:
        sink_port = B.free_port()
        sink = procs.start("sink", [sys.executable, str(B.ROOT / "bench" / "sink.py"), str(sink_port)], cpus=OTHER_CPU)
        B.wait_http(f"http://127.0.0.1:{sink_port}/healthz", 15, sink)
        for i, name in enumerate(names):
            raw["runs"].append(run_variant(procs, work, args.checks, sink_port, name, 30 + i))
            for proc in [p for p in procs.started if getattr(p, "bench_name", "") == "nginx"]:
                procs.stop(proc)

    label = {"shipped": "agent (uptime-agent run), HTTP", "prototype": "agent prototype, HTTP",
             "noop": "agent pipeline, no-op prober", "prototype-noop": "agent prototype, no-op prober"}
    rows = []
    for r in raw["runs"]:
        rows.append([label[r["variant"]], r["results"], f"{r['ok'] / max(1, r['results']):.1%}", r["p50"], r["p99"],
                     r["max"], r["over_1s"], r["missed_slots"], r["cpu_s_burst"], r["startup_s"], r["rss_mib_after"],
                     "met" if r["p99"] is not None and r["p99"] < 1.0 and r["results"] >= args.checks else "MISSED"])
    rows.append(["bare asyncio call_at (floor)", peer["results"], "-", peer["p50"], peer["p99"], peer["max"],
                 peer["over_1s"], "-", None, None, None, "met" if peer["p99"] < 1.0 else "MISSED"])
    B.print_table(
        f"{args.checks:,} checks due at one whole minute (60 s interval), agent on core 0, nginx + stub collector on core 1",
        ["run", "results", "ok", "late p50 s", "late p99 s", "late max s", "late >= 1 s", "missed slots",
         "CPU s (burst)", "startup s", "RSS MiB", "goal p99 < 1 s"],
        rows,
        notes=[*(f"{label[r['variant']]}: failed probes by reason (whole run) {r['failures']}" for r in raw["runs"] if r["failures"]),
               "lateness = started - slot of each result of that minute, exact (from the results themselves).",
               f"prototype flags: {' '.join(VARIANTS['prototype'])}; runtime {time.monotonic() - started:.0f} s."],
    )
    raw["elapsed_s"] = time.monotonic() - started
    B.save_json("scheduling", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
