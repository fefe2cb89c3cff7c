"""Ingest latency while anonymous readers ask for heavy claims: does reading the evidence stall the
agents that write it?

    .venv/bin/python bench/ingest_under_reads.py [--days 30] [--readers 4] [--seconds 30]

A real `uptime-collector serve` on SQLite, its database loaded first with `uptime-collector import`
with --days (30) of 60-second results from six agents for one check (`app`, 259,200 results for
30 days) under a contract policy (`sla`, the Nexcess preset over `app`). Then two phases of
--seconds each:

  ingest alone    six agent clients, each posting a one-result batch of a 1-second check (`beat`)
                  every second, as a shipper does, and timing each `POST /api/v1/results`;
  with readers    the same, while --readers (4) clients keep one claim each in flight without a
                  token: `GET /api/v1/claims/verify?policy=sla` over the whole loaded range (each
                  claim re-judges every round of the range from the raw results).

The goal: an agent's `POST /api/v1/results` answered within 1 s at p99 with the readers (before
reports and claims were computed off the event loop: 15.5 s). The readers come from one address,
as a scraper would; whatever the collector's limits answer them (429 or 503 with Retry-After) is
counted, and they wait as told before asking again. The collector runs with its defaults
otherwise (public read limits, month-to-date refresh every 30 s).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
TOKENS = {a: f"bench-reads-token-{a}-0000" for a in AGENTS}
GOAL_P99_S = 1.0


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_results(path: Path, start: datetime, end: datetime) -> int:
    """60-second results of `app` from six agents over [start, end), one agent in fifty failing."""
    rnd = random.Random(1)
    lines = 0
    with open(path, "w") as out:
        t = start
        while t < end:
            stamp = rfc3339(t)
            for agent in AGENTS:
                out.write(json.dumps({"agent": agent, "check": "app", "ts": stamp, "ok": rnd.random() > 0.02}) + "\n")
                lines += 1
            t += timedelta(seconds=60)
    return lines


def write_config(work: Path, port: int) -> Path:
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite+aiosqlite:///{work / 'collector.sqlite'}",
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [
            {"name": "app", "type": "http", "interval": "60s", "url": "http://127.0.0.1:9/"},
            {"name": "beat", "type": "http", "interval": "1s", "url": "http://127.0.0.1:9/"},
        ],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["app"]}],
    }
    path = work / "collector.yml"
    path.write_text(json.dumps(cfg))
    return path


async def phase(port: int, seconds: float, readers: int, claim: tuple[datetime, datetime]) -> dict:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    ingest: list[float] = []
    ingest_errors: dict[str, int] = {}
    claims: list[float] = []
    refusals: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def agent(session, name: str, offset: float) -> None:
        headers = {"Authorization": f"Bearer {TOKENS[name]}", "Content-Type": "application/json"}
        await asyncio.sleep(offset)
        tick = time.perf_counter()
        while tick < deadline:
            now = datetime.now(timezone.utc)
            slot = now.replace(microsecond=0)
            body = json.dumps({"agent": name, "results": [{
                "id": uuid.uuid4().hex, "check": "beat", "slot": rfc3339(slot), "started": rfc3339(now),
                "ok": True, "latency_ms": 3.0, "status_code": 200, "error": None}]})
            t0 = time.perf_counter()
            async with session.post(f"{base}/api/v1/results", data=body, headers=headers) as resp:
                text = await resp.read()
            ingest.append(time.perf_counter() - t0)
            if resp.status != 200:
                key = f"{resp.status} {text[:100].decode(errors='replace')}"
                ingest_errors[key] = ingest_errors.get(key, 0) + 1
            # a batch a second, as a shipper's flush; after a slow answer the next one follows at
            # once but not sooner than a second after the last, so each result has its own slot
            tick = max(tick + 1.0, t0 + 1.0)
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))

    async def reader(session) -> None:
        params = {"policy": "sla", "start": rfc3339(claim[0]), "end": rfc3339(claim[1])}
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.get(f"{base}/api/v1/claims/verify", params=params) as resp:
                await resp.read()
            if resp.status == 200:
                claims.append(time.perf_counter() - t0)
                continue
            refusals[str(resp.status)] = refusals.get(str(resp.status), 0) + 1
            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.ensure_future(reader(session)) for _ in range(readers)]
        await asyncio.sleep(0.5 if readers else 0)  # the claims are in flight before ingest is timed
        await asyncio.gather(*(agent(session, a, i / len(AGENTS)) for i, a in enumerate(AGENTS)))
        # readers still computing are not waited for (their answers are not what is measured)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"ingest": ingest, "ingest_errors": ingest_errors, "claims": claims, "refusals": refusals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30, help="days of 60-second results loaded (default 30)")
    ap.add_argument("--readers", type=int, default=4, help="claims kept in flight (default 4)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    args = ap.parse_args()

    B.header("ingest latency under heavy anonymous reads")
    work = B.workdir("reads")
    raw: dict = {"args": vars(args)}
    with B.Procs(work) as procs:
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        start = now - timedelta(days=args.days)
        port = B.free_port()
        config = write_config(work, port)
        results = work / "results.jsonl"
        raw["results_loaded"] = write_results(results, start, now)
        t0 = time.monotonic()
        loader = procs.start("import", [str(B.BIN / "uptime-collector"), "import", "--config", str(config),
                                        "--results", str(results)], cwd=work)
        if loader.wait(900) != 0:
            raise SystemExit(f"import failed:\n{procs.log_tail('import')}")
        raw["import_s"] = time.monotonic() - t0
        B.console.print(f"  loaded {raw['results_loaded']:,} results in {raw['import_s']:.0f} s", highlight=False)
        proc = procs.start("collector", [str(B.BIN / "uptime-collector"), "--log-level", "WARNING", "serve",
                                         "--config", str(config)], cwd=work)
        B.wait_http(f"http://127.0.0.1:{port}/healthz", 120, proc)
        # the month-to-date refresh runs once at start: let it finish before timing anything
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300:
            c0 = B.cpu_seconds(proc.pid)
            time.sleep(1.0)
            if B.cpu_seconds(proc.pid) - c0 < 0.05:
                break
        raw["idle_after_start_s"] = time.monotonic() - t0
        claim = (start, now)
        rows = []
        for name, readers in (("ingest alone", 0), (f"with {args.readers} readers", args.readers)):
            res = asyncio.run(phase(port, args.seconds, readers, claim))
            lat = res["ingest"]
            row = {"phase": name, "requests": len(lat), "p50_s": B.percentile(lat, 50), "p99_s": B.percentile(lat, 99),
                   "max_s": max(lat) if lat else float("nan"), "errors": res["ingest_errors"],
                   "claims": len(res["claims"]), "claim_p50_s": B.percentile(res["claims"], 50),
                   "refusals": res["refusals"]}
            raw[name] = row
            rows.append([name, row["requests"], row["p50_s"] * 1000, row["p99_s"] * 1000, row["max_s"] * 1000,
                         sum(row["errors"].values()),
                         row["claims"] if readers else None, row["claim_p50_s"] if readers else None,
                         ", ".join(f"{k}: {v}" for k, v in row["refusals"].items()) or ("none" if readers else None)])
        log = procs.log_tail("collector", 5)
        procs.stop(proc, grace=20)
    B.remove_workdir(work)
    p99 = raw[f"with {args.readers} readers"]["p99_s"]
    verdict = "met" if p99 < GOAL_P99_S else "missed"
    B.print_table(
        f"POST /api/v1/results latency, {len(AGENTS)} agents a batch a second; readers: claims over "
        f"{args.days} days of 60 s results from {len(AGENTS)} agents (SQLite)",
        ["phase", "ingest requests", "p50 ms", "p99 ms", "max ms", "ingest errors", "claims answered",
         "claim p50 s", "reader refusals"],
        rows,
        [f"goal: p99 < {GOAL_P99_S:g} s with the readers: {verdict} ({p99 * 1000:.0f} ms)",
         *(f"ingest refused ({name}): {k} x{v}" for name in raw if isinstance(raw[name], dict) and "errors" in raw[name]
           for k, v in raw[name]["errors"].items()),
         f"collector idle {raw['idle_after_start_s']:.0f} s after start (its month-to-date refresh)",
         *([f"collector log tail: {log.strip()}"] if log.strip() else [])])
    B.console.print(f"  raw figures: {B.save_json('ingest_under_reads', raw)}", highlight=False)


if __name__ == "__main__":
    main()
