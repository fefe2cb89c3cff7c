"""Collector ingest: results per second through the HTTP API (a real `uptime-collector serve`
process) into PostgreSQL and into SQLite, with several concurrent agent-like clients, idempotent
insert included, side by side with a raw COPY of the same rows through psql as the ceiling.

    .venv/bin/python bench/ingest.py [--backends postgresql,sqlite] [--agents 6] [--batch 500]
                                      [--results-pg 240000] [--results-sqlite 120000]

Per back end: a fresh database (PostgreSQL: `CREATE DATABASE` on 127.0.0.1:5432 as user postgres,
dropped at the end; SQLite: a file in a temporary folder), a collector with 6 agents and 100
checks at 60 s (--checks; the live evaluator re-evaluates the rounds the results touch, as it
would), and 6 clients, one per agent, each posting its batches (500 results, the agent's
default batch_size) one at a time, as an agent's shipper does. The bodies are encoded before the
clock starts. One batch in ten is a replay of one the same agent already sent (same result ids):
the collector must store nothing twice, and the stored row count is checked against the unique
results sent.

Peers (same rows, same table layout and indexes, measured in the same run):
  PostgreSQL: `psql -c "\\copy results_copy (...) FROM rows.csv CSV"` into a table created
              LIKE results INCLUDING ALL (the ceiling of the server for these rows).
  SQLite:     Python's sqlite3 executemany in one transaction into a copy of the results table
              with the same indexes (the ceiling of the library for these rows).
Three runs per back end (the third: the ingest path again with every batch signed by its agent's
Ed25519 key, chained, verified by the collector and appended to its evidence log, with
require_signatures; the goal is at most 25 % fewer results per second than unsigned). First the collector as configured by default (it recomputes month-to-date reports
of every policy at start and every 30 s: evaluation.status_interval), posting for 15 s from its
start; then the ingest path alone (status_interval 1d, posting once the collector went idle after
its start-up refresh; "busy after start" says how long that took).
The clients and the collector are not pinned: on 2 cores the collector, the database server and
the clients share both cores, as they would on a small host.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
CHECKS = 100  # --checks
INTERVAL = 60
REPLAY_EVERY = 10  # one batch in ten is a replay of an earlier batch of the same agent
COLUMNS = ["result_id", "agent_id", "check", "slot", "started", "ok", "latency_ms", "status_code", "error", "detail",
           "received_at"]


def psql(db: str, sql: str, *, timeout: float = 120) -> str:
    out = subprocess.run(["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", db, "-v",
                          "ON_ERROR_STOP=1", "-tA", "-c", sql], capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_batches(agents: list[str], total: int, batch: int, now: datetime, signers: dict | None = None
                 ) -> tuple[dict[str, list[tuple[bytes, dict]]], list[dict], int]:
    """Per agent, the encoded request bodies in sending order (replays included) with their extra
    headers (the batch signature when `signers` holds the agents' keys, chained as an agent's
    shipper chains them), the unique rows (for the COPY peer) and the number of results posted
    (replays counted)."""
    from evidence import canonical
    from evidence.build import AgentSigner

    per_agent = total // len(agents)
    slots_needed = -(-per_agent // CHECKS)
    newest = datetime.fromtimestamp((now.timestamp() // INTERVAL) * INTERVAL, timezone.utc) - timedelta(seconds=INTERVAL)
    bodies: dict[str, list[tuple[bytes, dict]]] = {a: [] for a in agents}
    rows: list[dict] = []
    posted = 0
    for agent in agents:
        results = []
        for k in range(per_agent):
            slot = newest - timedelta(seconds=INTERVAL * (slots_needed - 1 - k // CHECKS))
            ok = k % 50 != 0
            r = {"id": uuid.uuid4().hex, "check": f"chk{k % CHECKS:04d}", "slot": rfc3339(slot),
                 "started": rfc3339(slot + timedelta(milliseconds=20 + k % 300)), "ok": ok,
                 "latency_ms": 12.5 if ok else None, "status_code": 200 if ok else 503,
                 "error": None if ok else "status", "detail": None if ok else "status 503 not in 2xx"}
            results.append(r)
            rows.append({**r, "agent": agent})
        sent: list[tuple[bytes, dict]] = []
        signer = AgentSigner(agent, signers[agent]) if signers else None
        for i in range(0, len(results), batch):
            chunk = results[i:i + batch]
            body = json.dumps({"agent": agent, "results": chunk}, separators=(",", ":")).encode()
            headers = {}
            if signer is not None:  # signed before the clock starts, like the bodies' encoding
                signed = signer.sign([canonical.result_object_from_wire(r) for r in chunk])
                signer.acknowledged(signed)
                headers = {canonical.SIGNATURE_HEADER: signed.header()}
            sent.append((body, headers))
            posted += len(chunk)
            if len(sent) % REPLAY_EVERY == 0:  # replay the batch sent five batches ago
                replay = sent[-5]
                sent.append(replay)
                posted += json.loads(replay[0])["results"].__len__()
        bodies[agent] = sent
    return bodies, rows, posted


async def post_all(port: int, tokens: dict[str, str], bodies: dict[str, list[bytes]], time_limit: float) -> dict:
    import aiohttp

    url = f"http://127.0.0.1:{port}/api/v1/results"
    stats = {"requests": 0, "accepted": 0, "duplicates": 0, "errors": {}, "latencies": []}

    async def agent(session, name: str) -> None:
        headers = {"Authorization": f"Bearer {tokens[name]}", "Content-Type": "application/json"}
        for body, extra in bodies[name]:
            if time.perf_counter() > deadline:
                return
            for attempt in range(20):  # an agent retries 429/5xx with backoff; so does this client
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={**headers, **extra}) as resp:
                    text = await resp.read()
                stats["latencies"].append(time.perf_counter() - t0)
                stats["requests"] += 1
                if resp.status == 200:
                    reply = json.loads(text)
                    stats["accepted"] += reply["accepted"]
                    stats["duplicates"] += reply["duplicates"]
                    break
                key = f"{resp.status} {text[:120].decode(errors='replace')}"
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                if resp.status < 500 and resp.status != 429:
                    break
                await asyncio.sleep(min(1.0, 0.05 * 2 ** attempt))

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + time_limit
        t0 = time.perf_counter()
        await asyncio.gather(*(agent(session, a) for a in bodies))
        stats["wall"] = time.perf_counter() - t0
    return stats


def collector_config(work: Path, port: int, url: str, tokens: dict[str, str], status_refresh: bool = True,
                     public_keys: dict[str, str] | None = None) -> Path:
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": url,
        "max_body_bytes": 64 * 1024 * 1024,
        "rate_limit": {"requests_per_second": 10000, "burst": 10000},
        # status_interval: how often month-to-date reports are recomputed for every policy (the
        # status page and gauges); 1d here = once at start, to measure the ingest path alone.
        "evaluation": {} if status_refresh else {"status_interval": "1d"},
        "agents": [{"id": a, "token": t, **({"public_key": public_keys[a]} if public_keys else {})}
                   for a, t in tokens.items()],
        # signed runs: every batch's signature verified, refused unsigned
        "evidence": {"require_signatures": bool(public_keys), "log_key_file": str(work / "log.key")},
        "checks": [{"name": f"chk{i:04d}", "type": "http", "interval": f"{INTERVAL}s", "url": "http://127.0.0.1:9/",
                    "timeout": "5s"} for i in range(CHECKS)],
    }
    path = work / "collector.yml"
    path.write_text(json.dumps(cfg))
    return path


def wait_idle(pid: int, timeout: float) -> float:
    """Seconds until the process used under 5 % of a core over one second."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = B.cpu_seconds(pid)
        time.sleep(1.0)
        if B.cpu_seconds(pid) - c0 < 0.05:
            break
    return time.monotonic() - t0


def run_ingest(procs: B.Procs, work: Path, backend: str, total: int, n_agents: int, batch: int,
               time_limit: float = 90.0, sample_rss: bool = True, status_refresh: bool = False,
               peer: bool = True, signed: bool = False) -> dict:
    """One back end: database, collector, clients, count check, peer. Returns the figures."""
    agents = [f"agent-{i}" for i in range(n_agents)]
    tokens = {a: f"bench-ingest-token-{a}-0000" for a in agents}
    db_name = f"uptime_bench_{os.getpid()}"
    if backend == "postgresql":
        psql("postgres", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {db_name}")
        url = f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{db_name}"
    else:
        (work / "collector.sqlite").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{work / 'collector.sqlite'}"
    port = B.free_port()
    keys = None
    if signed:
        from evidence.keys import generate_private_key, public_key_text
        keys = {a: generate_private_key() for a in agents}
    config = collector_config(work, port, url, tokens, status_refresh,
                              {a: public_key_text(k) for a, k in keys.items()} if keys else None)
    res: dict = {"backend": backend, "agents": n_agents, "batch": batch, "status_refresh": status_refresh,
                 "signed": signed}
    try:
        t0 = time.monotonic()
        proc = procs.start(f"collector-{backend}", [str(B.BIN / "uptime-collector"), "--log-level", "WARNING", "serve",
                                                    "--config", str(config)], cwd=work)
        B.wait_http(f"http://127.0.0.1:{port}/healthz", 120, proc)
        res["startup_s"] = time.monotonic() - t0
        if not status_refresh:
            # the month-to-date refresh still runs once at start (next_run_time=now): wait for the
            # collector to go idle, so that only the ingest path is measured
            res["idle_after_s"] = wait_idle(proc.pid, 240) + res["startup_s"]
        bodies, rows, posted = make_batches(agents, total, batch, datetime.now(timezone.utc), keys)
        res["posted"], res["unique"] = posted, len(rows)
        rss_before = B.rss_mib(proc.pid)
        cpu0 = B.cpu_seconds(proc.pid)
        peak = [rss_before]

        async def run() -> dict:
            async def sampler():
                while True:
                    await asyncio.sleep(0.25)
                    peak[0] = max(peak[0], B.rss_mib(proc.pid))
            task = asyncio.ensure_future(sampler()) if sample_rss else None
            try:
                return await post_all(port, tokens, bodies, time_limit)
            finally:
                if task:
                    task.cancel()

        spy = None
        if os.environ.get("BENCH_PROFILE"):  # py-spy the collector while it ingests (for RESULTS.md)
            spy = subprocess.Popen([str(B.BIN / "py-spy"), "record", "-r", "100", "-p", str(proc.pid), "--format", "raw",
                                    "-o", f"{os.environ['BENCH_PROFILE']}-{backend}.txt", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats = asyncio.run(run())
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        res["collector_cpu_s"] = B.cpu_seconds(proc.pid) - cpu0
        res["rss_mib_idle"] = rss_before
        res["rss_mib_peak"] = peak[0]
        res["hwm_mib"] = B.hwm_mib(proc.pid)
        lat = stats.pop("latencies")
        res.update(stats)
        res["acked_per_s"] = (stats["accepted"] + stats["duplicates"]) / stats["wall"]
        res["stored_per_s"] = stats["accepted"] / stats["wall"]
        res["request_p50_ms"] = B.percentile(lat, 50) * 1000
        res["request_p99_ms"] = B.percentile(lat, 99) * 1000
        procs.stop(proc, grace=20)
        # idempotency: stored rows == unique results sent
        if backend == "postgresql":
            res["rows_stored"] = int(psql(db_name, "SELECT count(*) FROM results"))
        else:
            import sqlite3

            with sqlite3.connect(work / "collector.sqlite") as con:
                res["rows_stored"] = con.execute("SELECT count(*) FROM results").fetchone()[0]
        res["complete"] = res["accepted"] + res["duplicates"] == posted
        res["exactly_once"] = res["rows_stored"] == len(rows) if res["complete"] else res["rows_stored"] == res["accepted"]
        res["peer"] = copy_peer(work, backend, db_name, rows) if peer else None
    finally:
        if backend == "postgresql":
            try:
                psql("postgres", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            except Exception as exc:  # noqa: BLE001 - report, never leave silently
                B.console.print(f"  could not drop database {db_name}: {exc}")
    return res


def _csv_rows(rows: list[dict], received: str):
    for r in rows:
        yield [r["id"], r["agent"], r["check"], r["slot"], r["started"], "t" if r["ok"] else "f",
               "" if r["latency_ms"] is None else r["latency_ms"], r["status_code"], r["error"] or "",
               r["detail"] or "", received]


def copy_peer(work: Path, backend: str, db_name: str, rows: list[dict]) -> dict:
    received = rfc3339(datetime.now(timezone.utc))
    if backend == "postgresql":
        path = work / "rows.csv"
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(_csv_rows(rows, received))
        psql(db_name, "CREATE TABLE results_copy (LIKE results INCLUDING ALL)")
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        t0 = time.perf_counter()
        psql(db_name, f"\\copy results_copy ({cols}) FROM '{path}' WITH (FORMAT csv, NULL '')", timeout=300)
        wall = time.perf_counter() - t0
        stored = int(psql(db_name, "SELECT count(*) FROM results_copy"))
        return {"what": "psql \\copy (COPY)",
                "rows": stored, "wall": wall, "per_s": stored / wall}
    import sqlite3

    con = sqlite3.connect(work / "collector.sqlite", isolation_level=None)
    ddl = [sql for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'results' AND sql IS NOT NULL")]
    import re

    for sql in ddl:  # the same table and indexes under other names
        sql = re.sub(r"^CREATE TABLE \"?results\"?", "CREATE TABLE results_copy", sql)
        sql = re.sub(r" ON \"?results\"? ", " ON results_copy ", sql)
        sql = re.sub(r"\b(pk|fk|uq|ix)_results_", r"\1_results_copy_", sql)
        con.execute(sql)
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    values = [[r["id"], r["agent"], r["check"], r["slot"].replace("T", " ").rstrip("Z"),
               r["started"].replace("T", " ").rstrip("Z"), r["ok"], r["latency_ms"], r["status_code"], r["error"],
               r["detail"], received.replace("T", " ").rstrip("Z")] for r in rows]
    t0 = time.perf_counter()
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO results_copy ({cols}) VALUES ({', '.join('?' * len(COLUMNS))})", values)
    con.execute("COMMIT")
    wall = time.perf_counter() - t0
    stored = con.execute("SELECT count(*) FROM results_copy").fetchone()[0]
    con.close()
    return {"what": "sqlite3 executemany, 1 txn", "rows": stored, "wall": wall,
            "per_s": stored / wall}


def main() -> None:
    global CHECKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--checks", type=int, default=CHECKS, help="checks configured in the collector (default 100)")
    ap.add_argument("--results-pg", type=int, default=240_000)
    ap.add_argument("--results-sqlite", type=int, default=120_000)
    ap.add_argument("--signed", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the ingest path with every batch signed, verified and logged (require_signatures)")
    ap.add_argument("--with-status-refresh", action=argparse.BooleanOptionalAction, default=True,
                    help="also run 15 s with the collector's default status refresh (month-to-date reports every 30 s)")
    args = ap.parse_args()
    CHECKS = args.checks

    B.header("collector ingest: results/s through POST /api/v1/results")
    B.pin_self(None)
    started = time.monotonic()
    goals = {"postgresql": 20_000, "sqlite": 10_000}
    rows, raw = [], {"runs": []}
    for backend in [b for b in args.backends.split(",") if b]:
        work = B.workdir(f"ingest-{backend}")
        total = args.results_pg if backend == "postgresql" else args.results_sqlite
        goal = goals[backend]
        runs = []
        with B.Procs(work) as procs:
            if args.with_status_refresh:
                runs.append(run_ingest(procs, work, backend, total, args.agents, args.batch, time_limit=15.0,
                                       status_refresh=True, peer=False))
            runs.append(run_ingest(procs, work, backend, total, args.agents, args.batch))
            if args.signed:
                runs.append(run_ingest(procs, work, backend, total, args.agents, args.batch, peer=False, signed=True))
        B.remove_workdir(work)
        raw["runs"] += runs
        peer = next(r["peer"] for r in runs if r["peer"])
        unsigned = next(r for r in runs if not r["status_refresh"] and not r["signed"])
        for r in runs:
            what = "defaults (status refresh 30 s)" if r["status_refresh"] else "ingest path (status refresh off)"
            if r["signed"]:
                what = (f"ingest path, signed batches verified and logged "
                        f"({r['acked_per_s'] / unsigned['acked_per_s'] - 1:+.0%} vs unsigned; goal >= -25%)")
            rows.append([f"collector -> {backend}, {what}", r["accepted"] + r["duplicates"], r["acked_per_s"], r["stored_per_s"],
                         r["request_p50_ms"], r["request_p99_ms"], r["collector_cpu_s"] / r["wall"], r["rss_mib_peak"],
                         r.get("idle_after_s"), f"{r['rows_stored']:,} {'ok' if r['exactly_once'] else 'MISMATCH'}",
                         f"{r['acked_per_s'] / peer['per_s']:.3f}",
                         f"{'met' if r['acked_per_s'] >= goal else 'MISSED'} ({goal:,}/s)"])
            if r["errors"]:
                B.console.print(f"  {backend}: non-200 answers: {r['errors']}", highlight=False)
        rows.append([f"  peer: {peer['what']}", peer["rows"], peer["per_s"], peer["per_s"], None, None, None, None, None,
                     "", "1", ""])
    B.print_table(
        f"ingest: {args.agents} agent clients, batches of {args.batch}, 1 in {REPLAY_EVERY} batches replayed, {CHECKS} checks",
        ["path", "results acked", "acked/s", "stored/s", "req p50 ms", "req p99 ms", "collector CPU", "RSS peak MiB",
         "busy after start s", "rows stored (= unique)", "of ceiling", "goal"],
        rows,
        notes=["acked/s: results in 200 answers (replays included) per second of wall time; stored/s: new rows only.",
               "collector CPU: cores used by the collector process on average (the database server's own processes not included).",
               f"runtime {time.monotonic() - started:.0f} s"],
    )
    raw["elapsed_s"] = time.monotonic() - started
    B.save_json("ingest", raw)


if __name__ == "__main__":
    main()
