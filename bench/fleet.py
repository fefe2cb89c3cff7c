"""A fleet on this machine, one command: a real collector, real agents, real targets.

    .venv/bin/python bench/fleet.py [--checks 1000] [--agents 6] [--database sqlite|postgresql]
                                    [--fail-share 0.1] [--collectors 1]

1. nginx answers every check's URL on loopback addresses (`/ok/N`); the checks of one in ten
   (`--fail-share`) answer from `/flaky/N`, which nginx turns to 503 at a known moment by a reload.
2. `uptime-collector serve` (1 or more on one PostgreSQL: `--collectors`) with N HTTP checks at
   60 s, each with a contract policy of its own (NEXON Vision: a majority of agents failing for
   5 consecutive minutes, NEXON Vision SLA §2), `--agents` agents (`uptime-agent run`), spread over
   the minute (`schedule.spread: 50%`).
3. Measured: collector start-up (spawn to /healthz answering, checks and policies loaded), every
   slot's results stored, each failing check's verified window opened how long after its rule was
   met (the rule is met at the end of the fifth failing minute; the goal is within one interval
   plus the grace), the status page's p50/p99 while ingesting, a month report per policy and for
   all of them (sequential GETs), and the collector's CPU at rest (agents stopped).

The peer: nginx serving the targets is the only other process whose work is comparable per
request; its CPU per request is printed beside the collector's CPU per stored result.
Nothing here is part of the product; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

import benchlib as B  # noqa: E402

UTC = timezone.utc
INTERVAL = 60
GRACE = 5
MIN_DURATION = 300       # NEXON Vision SLA §2: five consecutive minutes
ADDRESSES = 32           # loopback addresses nginx listens on
ADMIN = "bench-admin-token-0123456789"
PG = "postgresql://postgres@127.0.0.1:5432"

NGINX = """daemon off; worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_timeout 0;
  server {{
{listens}
    location /ok/ {{ return 200 "ok"; }}
    location /flaky/ {{ return {flaky} "flaky"; }}
  }}
}}
"""


def nginx_conf(work: Path, port: int, flaky: int) -> Path:
    listens = "\n".join(f"    listen 127.0.{1 + i // 250}.{1 + i % 250}:{port} backlog=4096;" for i in range(ADDRESSES))
    conf = work / "nginx.conf"
    conf.write_text(NGINX.format(dir=work, listens=listens, flaky=flaky))
    return conf


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    began = time.perf_counter()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read(), time.perf_counter() - began
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--collectors", type=int, default=1)
    parser.add_argument("--fail-share", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2, help="minutes of all-up results before the failure")
    args = parser.parse_args()
    if args.collectors > 1 and args.database != "postgresql":
        raise SystemExit("--collectors above 1 needs --database postgresql (they share its evaluation leases)")
    B.header(f"Fleet: {args.checks} checks at {INTERVAL} s, {args.agents} agents, {args.collectors} collector(s), "
             f"{args.database}")
    work = B.workdir("fleet")
    work.chmod(0o755)
    port = B.free_port()
    failing = set(range(0, args.checks, max(1, round(1 / args.fail_share)))) if args.fail_share > 0 else set()
    checks = [{"name": f"c{i:05d}", "type": "http", "interval": f"{INTERVAL}s", "timeout": "5s",
               "url": f"http://127.0.{1 + (i % ADDRESSES) // 250}.{1 + (i % ADDRESSES) % 250}:{port}/"
                      f"{'flaky' if i in failing else 'ok'}/{i}"} for i in range(args.checks)]
    policies = [{"name": f"p{i:05d}", "preset": "nexon-vision", "components": [f"c{i:05d}"]} for i in range(args.checks)]
    agents = [{"id": f"agent-{k}", "token": f"bench-token-agent-{k}-0123456789"} for k in range(args.agents)]
    if args.database == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'collector.sqlite'}"
    else:
        import asyncio

        import asyncpg

        async def fresh() -> None:
            conn = await asyncpg.connect(f"{PG}/postgres")
            await conn.execute("DROP DATABASE IF EXISTS bench_fleet WITH (FORCE)")
            await conn.execute("CREATE DATABASE bench_fleet")
            await conn.close()
        asyncio.run(fresh())
        url = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_fleet"
    ports = [B.free_port() for _ in range(args.collectors)]
    rows: list[list] = []
    with B.Procs(work) as procs:
        nginx = procs.start("nginx", ["nginx", "-c", str(nginx_conf(work, port, 200)), "-p", str(work)])
        B.wait_http(f"http://127.0.1.1:{port}/ok/0", 15, nginx)

        collectors = []
        began = time.perf_counter()
        for n, cport in enumerate(ports):
            config = {"listen": {"host": "127.0.0.1", "port": cport}, "database_url": url, "public_reads": True,
                      "admin_token": ADMIN, "evaluation": {"interval": "1s", "grace": f"{GRACE}s"},
                      "agents": agents, "checks": checks, "policies": policies}
            path = work / f"collector-{n}.yml"
            path.write_text(yaml.safe_dump(config))
            if n == 0:
                migrate = procs.start("migrate", [str(B.BIN / "uptime-collector"), "migrate", "--config", str(path)])
                migrate.wait(timeout=300)
            collectors.append(procs.start(f"collector-{n}", [str(B.BIN / "uptime-collector"), "serve", "--config", str(path)]))
        for cport, proc in zip(ports, collectors):
            B.wait_http(f"http://127.0.0.1:{cport}/healthz", 300, proc)
        startup = time.perf_counter() - began
        base = f"http://127.0.0.1:{ports[0]}"

        for k, agent in enumerate(agents):
            config = {"agent": {"id": agent["id"]},
                      "collector": {"url": f"http://127.0.0.1:{ports[k % len(ports)]}", "token": agent["token"],
                                    "batch_size": 500, "flush_interval": "1s", "fetch_checks": True},
                      "metrics": {"listen": ""}, "spool": {"path": str(work / f"spool-{agent['id']}.sqlite")},
                      "schedule": {"spread": "50%"},
                      # the targets are on loopback: exempt them from the agent's SSRF guard
                      "guard": {"allow": ["127.0.0.0/8"]}}
            path = work / f"agent-{k}.yml"
            path.write_text(yaml.safe_dump(config))
            procs.start(f"agent-{k}", [str(B.BIN / "uptime-agent"), "run", "--config", str(path), "--log-level", "warning"])

        # all up for the warm-up minutes, then the flaky targets fail from the next whole minute on
        now = datetime.now(UTC)
        fail_at = now.replace(second=0, microsecond=0) + timedelta(minutes=args.warmup + 1)
        cpu0 = sum(B.cpu_seconds(p.pid) for p in collectors)
        t0 = time.monotonic()
        page_times = []
        while datetime.now(UTC) < fail_at - timedelta(seconds=2):
            status, _body, took = get(f"{base}/")
            page_times.append(took)
            time.sleep(3)
        (work / "nginx.conf").unlink()
        nginx_conf(work, port, 503)
        procs.start("nginx-reload", ["nginx", "-c", str(work / "nginx.conf"), "-p", str(work), "-s", "reload"]).wait(10)
        # the rule is met once the target has failed for 5 consecutive minutes: at the end of the
        # fifth failing round; the window must open within one interval plus the grace of it
        rule_met = fail_at + timedelta(seconds=MIN_DURATION)
        opened: dict[str, datetime] = {}
        unexpected: dict[str, dict] = {}
        expected_names = {f"p{i:05d}" for i in failing}
        deadline = rule_met + timedelta(seconds=INTERVAL + GRACE + 120)
        while datetime.now(UTC) < deadline and len(opened) < len(failing):
            status, body, took = get(f"{base}/api/v1/outages?open=true&since={fail_at.isoformat().replace('+00:00', 'Z')}")
            if status == 200:
                for w in json.loads(body).get("outages", []):
                    if w["policy"] in expected_names and w["policy"] not in opened:
                        opened[w["policy"]] = datetime.now(UTC)
                    elif w["policy"].startswith("p") and w["policy"] not in expected_names:
                        unexpected.setdefault(w["policy"], w)
            status, _body, took = get(f"{base}/")
            page_times.append(took)
            time.sleep(1)
        ingest_cpu = sum(B.cpu_seconds(p.pid) for p in collectors) - cpu0
        ingest_wall = time.monotonic() - t0
        status, body, _ = get(f"{base}/api/v1/policies")
        metrics = B.scrape(f"{base}/metrics")
        stored = B.total(metrics, "uptime_collector_results_total", outcome="accepted")

        lags = sorted((opened[name] - rule_met).total_seconds() for name in opened)
        period = datetime.now(UTC).strftime("%Y-%m")
        report_times = []
        for i in range(args.checks):
            status, _body, took = get(f"{base}/api/v1/reports/p{i:05d}?period={period}")
            if status == 200:
                report_times.append(took)

        for proc in [p for p in procs.started if p.bench_name.startswith("agent-")]:
            procs.stop(proc)
        time.sleep(10)
        rest0 = sum(B.cpu_seconds(p.pid) for p in collectors)
        time.sleep(30)
        rest = (sum(B.cpu_seconds(p.pid) for p in collectors) - rest0) / 30

    total_results = args.checks * args.agents * (ingest_wall / INTERVAL)
    rows = [
        ["collector start-up (spawn to /healthz)", f"{startup:.1f} s", "< 5 s"],
        ["windows opened / expected", f"{len(opened)} / {len(failing)}", "all"],
        ["windows opened for checks that did not fail", f"{len(unexpected)}", "0"],
        ["window opened after its rule was met (5 failing minutes), p50 / p99 / max",
         (f"{statistics.median(lags):.1f} / {B.percentile(lags, 99):.1f} / {max(lags):.1f} s" if lags else "-"),
         f"<= {INTERVAL + GRACE} s"],
        ["status page p50 / p99 while ingesting", f"{B.percentile(page_times, 50) * 1000:.0f} / "
                                                  f"{B.percentile(page_times, 99) * 1000:.0f} ms", "p99 < 200 ms"],
        ["month report per policy p50 / p99", (f"{B.percentile(report_times, 50) * 1000:.1f} / "
                                               f"{B.percentile(report_times, 99) * 1000:.1f} ms" if report_times else "-"),
         "< 50 ms"],
        ["month reports of all policies (sequential GETs)", f"{sum(report_times):.2f} s", "< 200 ms in total"],
        ["collector CPU while ingesting", f"{ingest_cpu / ingest_wall:.2f} cores", "-"],
        ["collector CPU per stored result (all its work: ingest, evaluation, the bench's page reads)",
         f"{ingest_cpu / max(1.0, stored) * 1e6:.0f} µs", "-"],
        ["collector CPU at rest (agents stopped)", f"{rest * 100:.1f} % of a core", "< 5 %"],
        ["results counted by /metrics", f"{stored:,.0f}", f"~{total_results:,.0f} due"],
    ]
    B.print_table(f"fleet: {args.checks} checks, {args.agents} agents, {args.collectors} collector(s) on {args.database}",
                  ["figure", "measured", "goal"], rows)
    for name, w in list(unexpected.items())[:3]:
        B.console.print(f"  unexpected window {name}: {w['start']} .. {w['end']}: "
                        f"{json.dumps(w.get('evidence'))[:400]}", highlight=False)
    B.save_json(f"fleet_{args.database}_{args.checks}", {"rows": rows, "lags": lags})
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
