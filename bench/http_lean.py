"""The lean HTTP prober (agent/probers/http_lean.py) against aiohttp's (agent/probers/http.py) and
prometheus-blackbox-exporter, fresh connection per probe, each pinned to one core, in one run.

    .venv/bin/python bench/http_lean.py [--kinds http,https] [--probes 6000] [--concurrency 100]
        [--rates 1500,2000,2500,3000,3500,4000,5000] [--tls-rates 250,500,750,1000,1500,2000] [--duration 5]

Layout (2 cores): core 0 runs the prober under test only: a worker process on uvloop (as the agent
runs, agent/cli.py) calling the prober's `probe` as agent.probers.run_probe does, without
scheduler, spool or shipper; then the exporter. Core 1 runs the targets (one nginx worker, `200
ok`, plain HTTP and HTTPS with a certificate of a CA made for the run, verified by every prober),
the drivers of the exporter (wrk, Python) and this script. Every prober and step probes eight
loopback addresses of its own, so that none meets another's TIME_WAIT sockets.

1. probes per CPU-second, closed loop: PROBES probes (after 300 not counted), CONCURRENCY in
   flight, timeout 1 s; the CPU time of the prober's process alone. The exporter is driven through
   /probe (keep-alive requests from core 1; its probes open fresh connections) at the same
   concurrency.
2. ceiling: the exporter's most probes/s on core 0, driven by wrk in a closed loop (64
   connections, DURATION seconds), as bench/http_probes.py measures it.
3. sustained, open loop: the prober's worker starts RATE probes a second (every 5 ms those due by
   then; timeout 800 ms) for DURATION seconds, then waits for the last. A rate is sustained when
   every probe started succeeded (no timeout, which on loopback would be the prober's own), the
   probes started are >= 99.9 % of those offered and start lateness p99 (started - due) is under
   1 s (bench/http_probes.py's bound). The ramp stops at the first rate that is not sustained.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402
import http_probes as HP  # noqa: E402  (wrk driver of the exporter)
import probers as P  # noqa: E402  (nginx, certificates, the exporter and its modules)

PROBE_CPU, OTHER_CPU = "0", "1"
WARMUP = 300
CLOSED_TIMEOUT, OPEN_TIMEOUT = "1s", "800ms"
ADDRESSES = 8
BLOCKS = {"http": 41, "https": 42}
IMPLS = ("aiohttp", "lean")
# Offsets of each prober's addresses within its kind's block (127.0.B.OFFSET+1..+8); the open-loop
# ramp moves 10 up per step.
OFFSETS = {("aiohttp", "closed"): 0, ("lean", "closed"): 10, ("aiohttp", "open"): 20, ("lean", "open"): 100,
           ("exporter", "closed"): 180, ("exporter", "ceiling"): 190}
LATENESS_P99 = 1.0  # as bench/http_probes.py and the scheduling goal: start lateness p99 under 1 s
STARTED_SHARE = 0.999


def addresses(kind: str, offset: int) -> list[str]:
    return [f"127.0.{BLOCKS[kind]}.{offset + i}" for i in range(1, ADDRESSES + 1)]


def urls(kind: str, ports: dict[str, int], offset: int) -> list[str]:
    port = ports[kind]
    return [f"{kind}://{a}:{port}/" for a in addresses(kind, offset)]


def check_specs(kind: str, target_list: list[str], ca_file: str, count: int, timeout: str) -> list[dict]:
    extra = {"tls_ca_file": ca_file} if kind == "https" else {}
    return [{"name": f"{kind}{i}", "type": "http", "interval": "10s", "timeout": timeout,
             "url": target_list[i % len(target_list)], **extra} for i in range(count)]


# --- the worker, pinned to the probe core ----------------------------------------------------------


def prober(impl: str):
    from agent.probers import http, http_lean, judge_degraded

    probe = {"aiohttp": http.probe, "lean": http_lean.probe}[impl]

    async def run(check):  # as agent.probers.run_probe runs the table's prober
        return judge_degraded(check, await probe(check, agent_id="bench"))
    return run


async def closed_loop(checks: list, impl: str, concurrency: int) -> dict:
    run = prober(impl)
    sem = asyncio.Semaphore(concurrency)
    ok, errors = 0, {}

    async def one(check) -> None:
        nonlocal ok
        async with sem:
            result = await run(check)
        if result.ok:
            ok += 1
        else:
            errors[result.error] = errors.get(result.error, 0) + 1

    await asyncio.gather(*(one(c) for c in checks[:WARMUP]))
    ok, errors = 0, {}
    measured = checks[WARMUP:]
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(c) for c in measured))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "ok": ok, "n": len(measured),
            "errors": errors}


async def open_loop(checks: list, impl: str, rate: float, duration: float) -> dict:
    run = prober(impl)
    loop = asyncio.get_running_loop()
    ok, errors, lateness = 0, {}, []
    tasks: set[asyncio.Task] = set()

    async def one(check, due: float) -> None:
        nonlocal ok
        lateness.append(loop.time() - due)
        result = await run(check)
        if result.ok:
            ok += 1
        else:
            errors[result.error] = errors.get(result.error, 0) + 1

    await asyncio.gather(*(run(c) for c in checks[:WARMUP]))  # TLS contexts, caches, first connections
    offered = int(rate * duration)
    cpu0 = time.process_time()
    start = loop.time() + 0.01
    started = 0
    while started < offered:
        now = loop.time()
        due_by_now = min(offered, int((now - start) * rate) + 1) if now >= start else 0
        while started < due_by_now:
            due = start + started / rate
            task = loop.create_task(one(checks[WARMUP + started % (len(checks) - WARMUP)], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            started += 1
        await asyncio.sleep(0.005)
    window = loop.time() - start
    if tasks:
        await asyncio.wait(list(tasks), timeout=5)
    cpu = time.process_time() - cpu0
    lateness.sort()
    return {"rate": rate, "offered": offered, "started": len(lateness), "ok": ok, "errors": errors,
            "window": window, "cpu": cpu, "cpu_cores": cpu / window,
            "lateness_p50": B.percentile(lateness, 50), "lateness_p99": B.percentile(lateness, 99),
            "lateness_max": lateness[-1] if lateness else None}


def worker_main(args) -> None:
    from agent.probers import prepare
    from protocol.checks import parse_checks

    checks = parse_checks(json.loads(Path(args.worker).read_text()))
    prepare(checks)

    async def main():
        if args.mode == "closed":
            return await closed_loop(checks, args.impl, args.concurrency)
        return await open_loop(checks, args.impl, args.rate, args.duration)

    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        raise SystemExit("uvloop is needed (the agent's loop): pip install -e '.[bench]'") from None
    with runner:
        print(json.dumps(runner.run(main())))


def run_worker(work: Path, name: str, specs: list[dict], argv: list[str]) -> dict:
    path = work / f"checks-{name}.json"
    path.write_text(json.dumps(specs))
    out = subprocess.run(B.taskset(PROBE_CPU, [sys.executable, __file__, "--worker", str(path), *argv]),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the exporter ---------------------------------------------------------------------------------


def exporter_ceiling(work: Path, port: int, pid: int, kind: str, target_list: list[str], duration: float) -> dict:
    """wrk against /probe, 64 connections (bench/http_probes.py's driver, with this kind's module)."""
    module = P.MODULES[kind]
    saved_lua, saved_measure = HP.WRK_LUA, HP.MEASURE
    HP.WRK_LUA, HP.MEASURE = saved_lua.replace("module=http_2xx", f"module={module}"), duration
    try:
        return HP.exporter_ceiling(work, port, pid, target_list)
    finally:
        HP.WRK_LUA, HP.MEASURE = saved_lua, saved_measure


def used_offsets(steps: int) -> list[int]:
    if steps > 7:
        raise SystemExit("--rates: at most 7 steps (each prober's ramp has 7 blocks of addresses)")
    return sorted(set(OFFSETS.values()) | {OFFSETS[(impl, "open")] + 10 * s for impl in IMPLS for s in range(steps)})


def start_nginx(procs: B.Procs, work: Path, ports: dict[str, int], kinds: list[str], steps: int) -> None:
    offsets = used_offsets(steps)
    plain = [a for off in offsets for a in addresses("http", off)] if "http" in kinds else []
    tls = [a for off in offsets for a in addresses("https", off)] if "https" in kinds else []
    if not plain:  # P.start_nginx waits for a plain address to answer
        plain = addresses("http", 0)
    P.start_nginx(procs, work, plain, tls, ports)


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="http,https", help="comma-separated subset of http,https")
    ap.add_argument("--probes", type=int, default=6000, help="closed loop: probes measured per prober (default 6000)")
    ap.add_argument("--concurrency", type=int, default=100, help="closed loop: probes in flight (default 100)")
    ap.add_argument("--rates", default="1500,2000,2500,3000,3500,4000,5000", help="open loop: the HTTP ramp, probes/s")
    ap.add_argument("--tls-rates", default="250,500,750,1000,1500,2000",
                    help="open loop: the HTTPS ramp (the handshakes cost the target's core too)")
    ap.add_argument("--duration", type=float, default=5.0, help="open loop and ceiling: seconds per step (default 5)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("closed", "open"), help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args)
        return

    kinds = [k for k in args.kinds.split(",") if k]
    ramps = {"http": [int(r) for r in args.rates.split(",") if r],
             "https": [int(r) for r in args.tls_rates.split(",") if r]}
    steps = max(len(ramps[k]) for k in kinds)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the exporter's ceiling: apt-get install wrk")
    B.header("lean HTTP prober vs aiohttp's vs blackbox_exporter, one core each, fresh connection per probe")
    B.pin_self({int(OTHER_CPU)})
    began = time.monotonic()
    work = B.workdir("http-lean")
    raw: dict = {"probes": args.probes, "concurrency": args.concurrency, "rates": ramps, "duration": args.duration,
                 "closed": [], "ceiling": [], "open": []}
    closed_rows, sustained_rows, ramp_rows = [], [], []
    with B.Procs(work) as procs:
        ports = {"http": B.free_port(), "https": B.free_port()}
        ca_file = P.make_certificates(work, [a for off in used_offsets(steps) for a in addresses("https", off)])
        start_nginx(procs, work, ports, kinds, steps)
        exporter, exporter_port = P.start_exporter(procs, work, ca_file)
        version = B.blackbox_version().split()[0]
        for kind in kinds:
            # 1. probes per CPU-second, closed loop
            per_cpu = {}
            for impl in IMPLS:
                specs = check_specs(kind, urls(kind, ports, OFFSETS[(impl, "closed")]), ca_file,
                                    args.probes + WARMUP, CLOSED_TIMEOUT)
                r = run_worker(work, f"{kind}-{impl}-closed", specs, ["--mode", "closed", "--impl", impl,
                                                                      "--concurrency", str(args.concurrency)])
                r.update(kind=kind, prober=impl, rate=r["ok"] / r["wall"], per_cpu_s=r["ok"] / r["cpu"])
                raw["closed"].append(r)
                per_cpu[impl] = r
                B.console.print(f"  {kind} {impl}: {r['per_cpu_s']:,.0f} probes/CPU-s", highlight=False)
            peer = P.run_exporter(exporter_port, exporter.pid, kind, urls(kind, ports, OFFSETS[("exporter", "closed")]),
                                  args.probes, args.concurrency)
            peer.update(kind=kind, prober=f"blackbox_exporter {version}", rate=peer["ok"] / peer["wall"],
                        per_cpu_s=peer["ok"] / peer["cpu"] if peer["cpu"] else None)
            raw["closed"].append(peer)
            per_cpu["exporter"] = peer
            B.console.print(f"  {kind} exporter: {peer['per_cpu_s']:,.0f} probes/CPU-s", highlight=False)
            for name, r in (("aiohttp prober", per_cpu["aiohttp"]), ("lean prober", per_cpu["lean"]),
                            (f"blackbox_exporter ({P.MODULES[kind]})", peer)):
                closed_rows.append([kind, name, r["ok"], r["n"], r["wall"], r["rate"], r["cpu"], r["per_cpu_s"],
                                    f"{r['per_cpu_s'] / per_cpu['aiohttp']['per_cpu_s']:.2f}x",
                                    f"{r['per_cpu_s'] / peer['per_cpu_s']:.2f}x" if peer["per_cpu_s"] else "-",
                                    ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-"])

            # 2. the exporter's ceiling on core 0
            ceiling = exporter_ceiling(work, exporter_port, exporter.pid, kind,
                                       urls(kind, ports, OFFSETS[("exporter", "ceiling")]), args.duration)
            ceiling["kind"] = kind
            raw["ceiling"].append(ceiling)
            if "error" in ceiling:
                B.console.print(f"  {kind} exporter ceiling: {ceiling['error']}", highlight=False)
            else:
                B.console.print(f"  {kind} exporter ceiling: {ceiling['ok_per_s']:,.0f} probes/s", highlight=False)

            # 3. sustained, open loop
            best = {}
            rates = ramps[kind]
            for impl in IMPLS:
                best[impl] = None
                for step, rate in enumerate(rates):
                    offset = OFFSETS[(impl, "open")] + 10 * step
                    count = WARMUP + min(int(rate * args.duration), 20000)
                    specs = check_specs(kind, urls(kind, ports, offset), ca_file, count, OPEN_TIMEOUT)
                    r = run_worker(work, f"{kind}-{impl}-open-{rate}", specs,
                                   ["--mode", "open", "--impl", impl, "--rate", str(rate),
                                    "--duration", str(args.duration)])
                    failures = r["started"] - r["ok"]
                    r.update(kind=kind, prober=impl,
                             sustained=(failures == 0 and r["started"] >= STARTED_SHARE * r["offered"]
                                        and r["lateness_p99"] < LATENESS_P99))
                    raw["open"].append(r)
                    ramp_rows.append([kind, impl, rate, r["started"], r["ok"],
                                      ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-",
                                      r["cpu_cores"], r["lateness_p99"] * 1000, r["lateness_max"] * 1000,
                                      "yes" if r["sustained"] else "no"])
                    B.console.print(f"  {kind} {impl} @ {rate}/s: ok {r['ok']}/{r['started']}, "
                                    f"CPU {r['cpu_cores']:.2f} cores, lateness p99 {r['lateness_p99'] * 1000:.1f} ms, "
                                    f"errors {r['errors'] or '-'}", highlight=False)
                    if not r["sustained"]:
                        break
                    best[impl] = r
            ceiling_rate = ceiling.get("ok_per_s")
            for impl in IMPLS:
                b = best[impl]
                sustained_rows.append([kind, f"{impl} prober", b["rate"] if b else "< " + str(rates[0]),
                                       b["cpu_cores"] if b else "-",
                                       f"{b['rate'] / ceiling_rate:.2f}x" if b and ceiling_rate else "-"])
            sustained_rows.append([kind, f"blackbox_exporter ceiling (wrk, 64 conns)", ceiling_rate or "-",
                                   ceiling.get("cpu_cores", "-"), "1.00x" if ceiling_rate else "-"])
        raw["exporter_rss_mib"] = B.rss_mib(exporter.pid)

    B.print_table(
        f"1. Probes per CPU-second, closed loop, prober pinned to core 0, {args.concurrency} in flight, uvloop",
        ["kind", "prober", "ok", "probes", "wall s", "probes/s", "CPU s", "probes/CPU-s", "vs aiohttp",
         "vs exporter", "failed"],
        closed_rows)
    B.print_table(
        f"2. Open-loop ramp, {args.duration:g} s a step, timeout {OPEN_TIMEOUT}: sustained = no failure, "
        f">= {STARTED_SHARE:.1%} started, start lateness p99 < {LATENESS_P99 * 1000:.0f} ms",
        ["kind", "prober", "offered/s", "started", "ok", "failed", "CPU cores", "lateness p99 ms",
         "lateness max ms", "sustained"],
        ramp_rows)
    B.print_table(
        "3. Highest sustained rate on one core, beside blackbox_exporter's ceiling on the same core",
        ["kind", "prober", "probes/s", "CPU cores", "vs exporter ceiling"],
        sustained_rows,
        notes=[f"exporter: blackbox_exporter {B.blackbox_version()}; targets: nginx on core 1 (HTTP, HTTPS with "
               "the run's own CA, verified by every prober); CPU of the prober's process only.",
               f"runtime {time.monotonic() - began:.0f} s"])
    raw["elapsed_s"] = time.monotonic() - began
    B.save_json("http_lean", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
