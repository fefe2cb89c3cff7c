"""Agent HTTP probing: the highest rate of scheduled probes one agent process sustains against
loopback targets with a fresh connection per probe and check-start lateness p99 under 1 s, side by
side with prometheus-blackbox-exporter on the same core against the same targets.

    .venv/bin/python bench/http_probes.py [--rates 1000,1250,1500,2000] [--proto-rates 1250,1500,2000]

Layout (2 cores): core 0 runs the prober under test only (the agent, then the exporter); core 1
runs the targets (one nginx worker answering `200 ok`; each step probes 8 loopback addresses of
its own, 127.0.B.1-8, so no step meets the TIME_WAIT sockets of the one before), the
stub collector the agent ships to (bench/sink.py, acknowledges every batch), and the drivers.

Agent: `uptime-agent run` with N HTTP checks at a 1 s interval (so N probes/s, all due at each
whole second: wall-clock-aligned slots), timeout 800 ms, spool and shipping as configured by
default. Each rate runs 3 s to warm up, then is measured over 6 whole slots: from the agent's
own /metrics (uptime_agent_probes_total by result, uptime_agent_missed_slots_total) and /proc (CPU,
RSS), and, exactly, from the results of those 6 slots as the stub collector received them
(completed probes, successes, start lateness = started - slot). A rate is sustained when >= 99 %
of the 6 slots' probes completed and >= 99 % succeeded, <= 0.1 % of slots were missed and the
start lateness p99 is under 1 s. The ramp stops at the first rate
that is not sustained.

Prototype rows: the same agent code with the changes recommended in bench/RESULTS.md
(bench/agent_variant.py: --uvloop --shared-connector --batched-spool --grouped-schedule). Not the
shipped agent.

Exporter: Debian's prometheus-blackbox-exporter pinned to core 0 (GOMAXPROCS follows: 1), module
http_2xx (fresh connection per probe), driven (a) by `wrk` in a closed loop (64 connections,
6 s) for its ceiling, and (b) open loop at the agent's best sustained rate for 6 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PROBE_CPU, OTHER_CPU = "0", "1"
WARMUP, MEASURE = 3.0, 6.0
TIMEOUT = "800ms"
PROTOTYPE = ["--uvloop", "--shared-connector", "--batched-spool", "--grouped-schedule"]
LATENESS = "uptime_agent_check_start_lateness_seconds"


def agent_config(work: Path, urls: list[str], n: int, sink_port: int, metrics_port: int) -> Path:
    checks = [{"name": f"web{i:05d}", "type": "http", "interval": "1s", "url": urls[i % len(urls)], "timeout": TIMEOUT}
              for i in range(n)]
    cfg = {
        "agent": {"id": "bench"},
        "collector": {"url": f"http://127.0.0.1:{sink_port}", "token": "bench-token-0000000001", "fetch_checks": False},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "spool": {"path": str(work / f"spool-{n}-{{agent_id}}.sqlite")},
        "checks": checks,
    }
    path = work / f"agent-{n}.yml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def timed_scrape(url: str, pid: int) -> tuple[dict, float, float]:
    """A scrape, stamped at the middle of the request (a busy agent answers late), and the CPU
    seconds the agent had used by then."""
    t0, c0 = time.monotonic(), B.cpu_seconds(pid)
    samples = B.scrape(url)
    t1, c1 = time.monotonic(), B.cpu_seconds(pid)
    return samples, (t0 + t1) / 2, (c0 + c1) / 2


def run_agent(procs: B.Procs, work: Path, urls: list[str], n: int, sink_port: int, variant: list[str]) -> dict:
    mport = B.free_port()
    config = agent_config(work, urls, n, sink_port, mport)
    if variant:
        argv = [sys.executable, str(B.ROOT / "bench" / "agent_variant.py"), "--config", str(config), *variant]
    else:
        argv = [str(B.BIN / "uptime-agent"), "run", "--config", str(config), "--log-level", "error"]
    t_start = time.monotonic()
    proc = procs.start(f"agent-{n}{'-proto' if variant else ''}", argv, cpus=PROBE_CPU)
    metrics = f"http://127.0.0.1:{mport}/metrics"
    try:
        B.wait_http(f"http://127.0.0.1:{mport}/healthz", 60, proc)
        startup = time.monotonic() - t_start
        time.sleep(WARMUP)
        # the window runs from half a second after a slot to half a second after the slot MEASURE
        # seconds later: it holds MEASURE whole bursts, whatever their phase
        time.sleep(1.5 - (time.time() % 1.0))
        ta_wall = time.time()
        a, ta, ca = timed_scrape(metrics, proc.pid)
        time.sleep(max(0.0, ta_wall + MEASURE - time.time()))
        tb_wall = time.time()
        b, tb, cb = timed_scrape(metrics, proc.pid)
        rss = B.rss_mib(proc.pid)
        time.sleep(3.0)  # the last slots' results reach the stub collector (flush_interval 1 s)
        first_slot, end_slot = math.ceil(ta_wall), math.floor(tb_wall) + 1
        stats = json.loads(B.http_get(f"http://127.0.0.1:{sink_port}/bench/stats?from={first_slot}&to={end_slot}"))
    finally:
        procs.stop(proc, grace=10)
    dt = tb - ta
    d = lambda name, **m: B.total(b, name, **m) - B.total(a, name, **m)  # noqa: E731
    probes = d("uptime_agent_probes_total")
    by_result = {r: d("uptime_agent_probes_total", result=r) for r in ("ok", "connect", "timeout", "status", "internal")}
    hist = B.histogram_delta(B.histogram_buckets(b, LATENESS), B.histogram_buckets(a, LATENESS))
    slots = end_slot - first_slot
    late = stats["lateness"]
    res = {
        "checks": n, "variant": " ".join(variant) or "shipped", "startup_s": startup, "slots": slots,
        # exact, per slot: results of the window's slots that reached the stub collector
        "completed_share": stats["results"] / (n * slots), "ok_share": stats["ok"] / max(1, stats["results"]),
        "lateness_p50": late["p50"], "lateness_p99": late["p99"],
        "share_started_within_1s": 1 - late["over_1s"] / max(1, stats["results"]),
        # from the agent's own metrics over the window
        "completed_per_s": probes / dt, "by_result": by_result, "missed_per_s": d("uptime_agent_missed_slots_total") / dt,
        # failures the agent withheld because its own event loop was late (agent/overload.py)
        "doubtful_per_s": d("uptime_agent_doubtful_failures_total") / dt,
        "hist_lateness_p99": B.histogram_quantile(hist, 0.99), "hist_share_within_1s": B.share_at_most(hist, 1.0),
        "cpu_cores": (cb - ca) / dt, "rss_mib": rss,
    }
    res["probes_per_cpu_s"] = probes / (cb - ca) if cb > ca else float("nan")
    res["sustained"] = (res["completed_share"] >= 0.99 and res["ok_share"] >= 0.99
                        and res["missed_per_s"] <= 0.001 * n and (late["p99"] or 99) < 1.0)
    return res


def ramp(procs, work, fresh_urls, sink_port, rates, variant) -> tuple[list[dict], int]:
    results, best = [], 0
    for n in rates:
        r = run_agent(procs, work, fresh_urls(), n, sink_port, variant)
        results.append(r)
        B.console.print(f"  {r['variant']:<10.10} {n:>5} checks/s: completed {r['completed_share']:.1%} of the slots' probes, "
                        f"ok {r['ok_share']:.1%}, lateness p99 {r['lateness_p99']:.3f} s, CPU {r['cpu_cores']:.2f}"
                        f" -> {'sustained' if r['sustained'] else 'NOT sustained'}", highlight=False)
        if not r["sustained"]:
            break
        best = n
    return results, best


PROBER_ALONE = """
import asyncio, json, sys, time
sys.path.insert(0, {root!r})
from urllib.parse import urlsplit
from protocol.checks import parse_checks
from agent.probers import http
urls = {urls!r}
checks = parse_checks([{{"name": f"c{{i}}", "type": "http", "interval": "1s", "url": urls[i % len(urls)], "timeout": "800ms"}} for i in range(4000)])

async def aiohttp_probe(c):
    return (await http.probe(c, agent_id="bench")).ok

async def streams_probe(c):
    # the floor: asyncio streams, one fresh connection, GET, read to EOF, status line checked
    u = urlsplit(c.url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"GET / HTTP/1.1\\r\\nHost: {{u.hostname}}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = await reader.read()
    writer.close()
    return data.startswith(b"HTTP/1.1 200")

async def main(probe):
    sem = asyncio.Semaphore(200); ok = 0
    async def one(c):
        nonlocal ok
        async with sem:
            r = await probe(c)
        ok += r
    await asyncio.gather(*(one(c) for c in checks[:400]))
    ok = 0
    t = time.perf_counter(); c0 = time.process_time()
    await asyncio.gather(*(one(c) for c in checks))
    print(json.dumps({{"wall": time.perf_counter() - t, "cpu": time.process_time() - c0, "ok": ok, "n": len(checks)}}))

probe = aiohttp_probe if {kind!r} == "aiohttp" else streams_probe
if {loop!r} == "uvloop":
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(probe))
else:
    asyncio.run(main(probe))
"""


def prober_alone(urls: list[str], kind: str = "aiohttp", loop: str = "asyncio") -> dict:
    """A prober without scheduler, spool or shipper: 4,000 probes, 200 in flight, on core 0.
    kind "aiohttp": the agent's own agent.probers.http.probe; "streams": a bare asyncio streams
    request (the floor of the interpreter and event loop, not a product path)."""
    code = PROBER_ALONE.format(root=str(B.ROOT), urls=urls, kind=kind, loop=loop)
    out = subprocess.run(B.taskset(PROBE_CPU, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["rate"] = r["n"] / r["wall"]
    r["per_cpu_s"] = r["n"] / r["cpu"]
    return r


WRK_LUA = """
local targets = {%s}
local i = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok_count = 0; fail_count = 0 end
function request()
  i = i + 1
  return wrk.format("GET", "/probe?module=http_2xx&target=" .. targets[(i %% #targets) + 1],
                    {["X-Prometheus-Scrape-Timeout-Seconds"] = "2"})
end
function response(status, headers, body)
  if status == 200 and string.find(body, "\\nprobe_success 1", 1, true) then ok_count = ok_count + 1
  else fail_count = fail_count + 1 end
end
function done(summary, latency, requests)
  local ok, fail = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok_count"); fail = fail + t:get("fail_count") end
  io.write(string.format("BENCH ok=%%d fail=%%d duration_us=%%d p50_us=%%d p99_us=%%d\\n", ok, fail,
           summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def exporter_ceiling(work: Path, port: int, pid: int, urls: list[str]) -> dict:
    wrk = shutil.which("wrk")
    if not wrk:
        return {"error": "wrk not installed (apt-get install wrk)"}
    from urllib.parse import quote

    script = work / "probe.lua"
    script.write_text(WRK_LUA % ", ".join(f'"{quote(u, safe="")}"' for u in urls))
    c0 = B.cpu_seconds(pid)
    out = subprocess.run(B.taskset(OTHER_CPU, [wrk, "-t1", "-c64", f"-d{int(MEASURE)}s", "-s", str(script),
                                               f"http://127.0.0.1:{port}/"]),
                         capture_output=True, text=True, timeout=60)
    cpu = B.cpu_seconds(pid) - c0
    m = re.search(r"BENCH ok=(\d+) fail=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)", out.stdout)
    if not m:
        return {"error": out.stdout[-500:] + out.stderr[-500:]}
    ok, fail, dur, p50, p99 = (int(x) for x in m.groups())
    secs = dur / 1e6
    return {"ok_per_s": ok / secs, "requests_per_s": (ok + fail) / secs, "ok_share": ok / max(1, ok + fail),
            "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "cpu_cores": cpu / secs, "probes_per_cpu_s": ok / cpu if cpu else None}


def exporter_at_rate(port: int, pid: int, urls: list[str], rate: int) -> dict:
    c0 = B.cpu_seconds(pid)
    res = asyncio.run(B.drive_probe_endpoint(port, urls, "http_2xx", concurrency=1024, rate=rate, duration=MEASURE))
    cpu = B.cpu_seconds(pid) - c0
    return {"rate": rate, "sent_per_s": res.sent / MEASURE, "ok_per_s": res.ok / MEASURE,
            "ok_share": res.ok / max(1, res.sent), "skipped": res.skipped,
            "p50_ms": B.percentile(res.latencies, 50) * 1000, "p99_ms": B.percentile(res.latencies, 99) * 1000,
            "cpu_cores": cpu / MEASURE}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="750,1000,1100,1250,1500,2000", help="checks at 1 s (= probes/s) tried for the agent")
    ap.add_argument("--proto-rates", default="1250,1500,1750,2000", help="rates tried for the prototype ('' to skip)")
    args = ap.parse_args()
    rates = [int(x) for x in args.rates.split(",") if x]
    proto_rates = [int(x) for x in args.proto_rates.split(",") if x]

    B.header("agent HTTP probing vs blackbox_exporter (fresh connection per probe, one core each)")
    B.pin_self({int(OTHER_CPU)})
    started = time.monotonic()
    work = B.workdir("http")
    raw: dict = {"measure_s": MEASURE, "timeout": TIMEOUT}
    with B.Procs(work) as procs:
        # one block of 8 target addresses per agent step, and one for the exporter (TIME_WAIT)
        blocks = list(range(10, 10 + len(rates) + len(proto_rates) + 2))
        port = B.free_port()
        all_urls = B.start_nginx(procs, work, [a for b in blocks for a in B.target_addresses(8, b)], port,
                                 cpus=OTHER_CPU)
        urls_of = {b: [u for u in all_urls if u.startswith(f"http://127.0.{b}.")] for b in blocks}
        next_block = iter(blocks)
        urls = urls_of[blocks[-1]]
        sink_port = B.free_port()
        sink = procs.start("sink", [sys.executable, str(B.ROOT / "bench" / "sink.py"), str(sink_port)], cpus=OTHER_CPU)
        B.wait_http(f"http://127.0.0.1:{sink_port}/healthz", 15, sink)

        raw["prober_alone"] = alone = prober_alone(urls)
        floors = {}
        for loop in ("asyncio", "uvloop"):
            try:
                floors[loop] = prober_alone(urls, "streams", loop)
            except SystemExit as exc:  # uvloop not installed
                B.console.print(f"  streams floor on {loop} skipped: {str(exc)[-200:]}", highlight=False)
        raw["streams_floor"] = floors
        raw["agent"], best = ramp(procs, work, lambda: urls_of[next(next_block)], sink_port, rates, [])
        raw["prototype"], proto_best = (ramp(procs, work, lambda: urls_of[next(next_block)], sink_port, proto_rates, PROTOTYPE)
                                        if proto_rates else ([], 0))
        urls = urls_of[blocks[-2]]  # the exporter's own block

        bb, bb_port = B.start_blackbox(procs, work, cpus=PROBE_CPU)
        asyncio.run(B.drive_probe_endpoint(bb_port, urls, "http_2xx", concurrency=32, count=500))  # warm up
        raw["exporter_ceiling"] = ceiling = exporter_ceiling(work, bb_port, bb.pid, urls)
        same = best or rates[0]
        raw["exporter_same_rate"] = at_rate = exporter_at_rate(bb_port, bb.pid, urls, same)
        raw["exporter_rss_mib"] = B.rss_mib(bb.pid)

    rows = []
    for r in raw["agent"] + raw["prototype"]:
        name = "agent (uptime-agent run)" if r["variant"] == "shipped" else "agent prototype"
        rows.append([name, r["checks"], r["checks"] * r["completed_share"], f"{r['ok_share']:.1%}", r["missed_per_s"],
                     r.get("doubtful_per_s"), r["lateness_p50"], r["lateness_p99"], f"{r['share_started_within_1s']:.1%}", r["cpu_cores"],
                     r["probes_per_cpu_s"], r["rss_mib"], "yes" if r["sustained"] else "NO"])
    rows.append(["agent prober only, 200 in flight", "-", alone["rate"], f"{alone['ok'] / alone['n']:.1%}",
                 "-", "-", None, None, "-", alone["cpu"] / alone["wall"], alone["per_cpu_s"], None, "-"])
    for loop, f in floors.items():
        rows.append([f"floor: bare asyncio streams probe ({loop})", "-", f["rate"], f"{f['ok'] / f['n']:.1%}", "-", "-", None, None,
                     "-", f["cpu"] / f["wall"], f["per_cpu_s"], None, "-"])
    if "error" not in ceiling:
        rows.append(["exporter ceiling (wrk, 64 conns)", "-", ceiling["requests_per_s"],
                     f"{ceiling['ok_share']:.1%}", "-", "-", ceiling["p50_ms"] / 1000, ceiling["p99_ms"] / 1000, "-",
                     ceiling["cpu_cores"], ceiling["probes_per_cpu_s"], raw["exporter_rss_mib"], "-"])
    rows.append([f"exporter at {same}/s (open loop)", same, at_rate["ok_per_s"], f"{at_rate['ok_share']:.1%}",
                 at_rate["skipped"], "-", at_rate["p50_ms"] / 1000, at_rate["p99_ms"] / 1000, "-", at_rate["cpu_cores"],
                 None, None, "yes" if at_rate["ok_share"] >= 0.99 and at_rate["skipped"] == 0 else "NO"])
    ex_rate = ceiling.get("ok_per_s", float("nan"))
    B.print_table(
        "HTTP probes on one core (core 0), fresh connection per probe, 1 s interval, nginx targets on core 1",
        ["prober", "scheduled/s", "completed/s", "ok", "missed/s", "doubtful/s", "late p50 s", "late p99 s", "start<1s",
         "CPU cores", "probes/CPU-s", "RSS MiB", "sustained"],
        rows,
        notes=[
            f"exporter: blackbox_exporter {B.blackbox_version()}; prototype: agent_variant.py {' '.join(PROTOTYPE)}.",
            "completed/s: probes of the 6 measured slots that completed, per slot; late p50/p99: check-start lateness, exact "
            "from the results; for the exporter rows, the /probe request latency.",
            f"agent best sustained: {best}/s (goal 2,000/s: {'met' if best >= 2000 else f'missed by {2000 - best}/s'}); "
            f"prototype best: {proto_best}/s; exporter ceiling: {ex_rate:,.0f} successful probes/s "
            f"(goal agent >= exporter: {'met' if best >= ex_rate else 'missed'}).",
            f"runtime {time.monotonic() - started:.0f} s",
        ],
    )
    raw.update(best=best, prototype_best=proto_best, elapsed_s=time.monotonic() - started)
    B.save_json("http_probes", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
