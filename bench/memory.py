"""Resident memory of an agent holding 10,000 checks, and of the collector at full ingest.

    .venv/bin/python bench/memory.py [--checks 10000] [--skip-collector]

Agent: `uptime-agent run` (pinned to core 0) with 1 check, then with 10,000 HTTP checks at a 60 s
interval against a trivial loopback target (nginx, core 1), shipping to the stub collector
(bench/sink.py). RSS is read from /proc after start-up (checks scheduled, nothing probed yet) and
sampled every 0.25 s through one whole-minute burst, when all 10,000 checks are probed at once;
the peak is also read from the kernel (VmHWM). Peer: prometheus-blackbox-exporter pinned to core
0, idle and after it ran 10,000 HTTP probes (200 in flight) against the same targets: the
exporter holds no check list of its own (Prometheus does), so its figure is the cost of probing.

Collector: `uptime-collector serve` on a fresh PostgreSQL database, idle after start, then at full
ingest (bench/ingest.py's clients: 6 agents posting 240,000 results in batches of 500, as fast as
the collector acknowledges), RSS sampled every 0.25 s and VmHWM at the end.

The agent part waits for the next whole minute, so the run takes 1-2 minutes plus ~40 s for the
collector.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PROBE_CPU, OTHER_CPU = "0", "1"


class Sampler:
    """Peak RSS of a pid, sampled in a thread every 0.25 s until stopped (bounded: 10 minutes)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, B.rss_mib(self.pid))
            except OSError:
                return
            self._stop.wait(0.25)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def agent_memory(procs: B.Procs, work: Path, urls: list[str], sink_port: int, n: int) -> dict:
    from scheduling import agent_config

    mport = B.free_port()
    config = agent_config(work, urls, n, sink_port, mport, f"mem{n}")
    t0 = time.time()
    proc = procs.start(f"agent-mem-{n}", [str(B.BIN / "uptime-agent"), "run", "--config", str(config), "--log-level", "error"],
                       cpus=PROBE_CPU)
    try:
        B.wait_http(f"http://127.0.0.1:{mport}/healthz", 120, proc)
        startup = time.time() - t0
        time.sleep(1.0)
        idle = B.rss_mib(proc.pid)
        sampler = Sampler(proc.pid)
        if n > 1:  # through one whole-minute burst (all checks due at once), until it is shipped
            slot = math.ceil((time.time() + 5) / 60) * 60
            time.sleep(max(0.0, slot - time.time()))
            deadline = slot + 40
            while time.time() < deadline:
                time.sleep(1.0)
                stats = json.loads(B.http_get(f"http://127.0.0.1:{sink_port}/bench/stats?from={slot}&to={slot + 1}"))
                if stats["results"] >= n:
                    break
            time.sleep(2.0)
        else:
            time.sleep(3.0)
        peak = sampler.stop()
        hwm = B.hwm_mib(proc.pid)
        after = B.rss_mib(proc.pid)
    finally:
        procs.stop(proc, grace=15)
    return {"checks": n, "startup_s": startup, "rss_idle_mib": idle, "rss_peak_mib": max(peak, after), "hwm_mib": hwm,
            "rss_after_mib": after}


def exporter_memory(procs: B.Procs, work: Path, urls: list[str], probes: int) -> dict:
    proc, port = B.start_blackbox(procs, work, cpus=PROBE_CPU)
    idle = B.rss_mib(proc.pid)
    sampler = Sampler(proc.pid)
    res = asyncio.run(B.drive_probe_endpoint(port, urls, "http_2xx", concurrency=200, count=probes))
    peak = sampler.stop()
    out = {"rss_idle_mib": idle, "rss_peak_mib": peak, "hwm_mib": B.hwm_mib(proc.pid), "probes": probes, "ok": res.ok}
    procs.stop(proc)
    return out


def collector_memory(procs: B.Procs, work: Path) -> dict:
    import ingest

    r = ingest.run_ingest(procs, work, "postgresql", 240_000, 6, 500, peer=False)
    return {"rss_idle_mib": r["rss_mib_idle"], "rss_peak_mib": r["rss_mib_peak"], "hwm_mib": r["hwm_mib"],
            "acked_per_s": r["acked_per_s"], "results": r["accepted"] + r["duplicates"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=10_000)
    ap.add_argument("--skip-collector", action="store_true")
    args = ap.parse_args()

    B.header("resident memory: agent with many checks, collector at full ingest")
    B.pin_self({int(OTHER_CPU)})
    started = time.monotonic()
    work = B.workdir("memory")
    raw: dict = {}
    with B.Procs(work) as procs:
        urls = B.start_nginx(procs, work, B.target_addresses(16, 50), B.free_port(), cpus=OTHER_CPU)
        sink_port = B.free_port()
        sink = procs.start("sink", [sys.executable, str(B.ROOT / "bench" / "sink.py"), str(sink_port)], cpus=OTHER_CPU)
        B.wait_http(f"http://127.0.0.1:{sink_port}/healthz", 15, sink)
        raw["agent_1"] = a1 = agent_memory(procs, work, urls, sink_port, 1)
        raw["agent_n"] = an = agent_memory(procs, work, urls, sink_port, args.checks)
        raw["exporter"] = ex = exporter_memory(procs, work, urls, args.checks)
        procs.stop(sink)
        if not args.skip_collector:
            B.pin_self(None)
            raw["collector"] = co = collector_memory(procs, work)
    per_check_kib = (an["rss_idle_mib"] - a1["rss_idle_mib"]) * 1024 / max(1, args.checks - 1)
    rows = [
        ["agent, 1 check", a1["rss_idle_mib"], a1["rss_peak_mib"], a1["hwm_mib"], ""],
        [f"agent, {args.checks:,} checks (60 s, one burst probed)", an["rss_idle_mib"], an["rss_peak_mib"], an["hwm_mib"],
         f"{per_check_kib:.1f} KiB per check scheduled; start-up {an['startup_s']:.1f} s"],
        [f"  peer: blackbox_exporter, {ex['probes']:,} probes (200 in flight)", ex["rss_idle_mib"], ex["rss_peak_mib"],
         ex["hwm_mib"], "holds no checks (Prometheus does)"],
    ]
    if not args.skip_collector:
        rows.append(["collector (PostgreSQL), idle -> full ingest", co["rss_idle_mib"], co["rss_peak_mib"], co["hwm_mib"],
                     f"{co['results']:,} results at {co['acked_per_s']:,.0f}/s"])
    B.print_table("resident memory (MiB)", ["process", "RSS idle", "RSS peak", "VmHWM", "note"], rows,
                  notes=[f"runtime {time.monotonic() - started:.0f} s"])
    raw["elapsed_s"] = time.monotonic() - started
    B.save_json("memory", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
