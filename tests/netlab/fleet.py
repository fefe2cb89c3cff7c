"""The fault helpers: the real programs of a scenario in a lab, and what to make of their results.

  * `Fleet`: `uptime-collector serve` behind the recording proxy on the collector host, the HTTP
    target on the target host, `uptime-agent run` on each agent host (`console_script` finds the
    installed programs); it reads back what the agents spooled, what the proxy saw sent and
    acknowledged, and what the collector stored, and accounts for every result
    (`accounting_problems`);
  * `Figures`: what a scenario prints (produced, sent, acknowledged, stored, duplicates, lost);
    `TerminalReport` prints it past pytest's capture (and appends it to the file named by
    UPTIME_FAULTS_SUMMARY, if set);
  * the checks a fleet runs against the target: `http_check`, `icmp_check`;
  * time and slots: `slot_of`, `utcnow`, `z` (RFC 3339 with Z), `sleep_until`, `parse_ts`,
    `slots_between`, `gaps`; `by_key` groups stored rows by (agent, check, slot).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import programs
from .lab import COLLECTOR_IP, COLLECTOR_PORT, METRICS_PORT, PROXY_PORT, TARGET_IP, Lab, Reply
from .postgres import Postgres

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def console_script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"console script {name} is not installed")
    return found


# --- time --------------------------------------------------------------------------------------

def slot_of(moment: datetime, interval: float) -> datetime:
    ms = int((moment - EPOCH) / timedelta(milliseconds=1))
    step = int(interval * 1000)
    return EPOCH + timedelta(milliseconds=ms // step * step)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - utcnow()).total_seconds()))


def parse_ts(text: str) -> datetime:
    text = text.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- the fleet: collector, proxy, target and agents in a lab -----------------------------------

def http_check(name: str = "web", interval: float = 2.0, timeout: str = "800ms", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "interval": interval, "url": f"http://{TARGET_IP}/",
            "timeout": timeout, "expected_status": [200], **extra}


def icmp_check(name: str = "ping", interval: float = 2.0, timeout: str = "500ms", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "icmp", "interval": interval, "host": TARGET_IP, "count": 1,
            "timeout": timeout, **extra}


@dataclass
class Figures:
    """What a scenario prints: results sent, acknowledged, stored, duplicates, lost."""

    produced: int  # distinct results the agents made (sent, in a spool snapshot, or still spooled at the end)
    sent: int  # distinct result ids in POSTs that reached the collector's host
    posts: int  # POST /api/v1/results that reached it
    resent: int  # result ids POSTed more than once (retries after a lost or refused answer)
    absorbed: int  # duplicates the collector reported in its 200 answers (idempotent ingest at work)
    acknowledged: int  # distinct ids in POSTs the collector answered 200
    stored: int  # result rows in the collector's database
    duplicates: int  # (agent, check, slot) stored more than once
    lost: int  # acknowledged, sent or in a spool snapshot (`Fleet.record_spool`), and not stored
    spooled: int  # still in the agents' spools at the end

    def line(self, name: str, runtime: float, extra: str = "") -> str:
        return (f"[{name}] produced={self.produced} sent={self.sent} posts={self.posts} resent={self.resent} "
                f"absorbed={self.absorbed} acknowledged={self.acknowledged} stored={self.stored} duplicates={self.duplicates} "
                f"lost={self.lost} spooled={self.spooled} runtime={runtime:.1f}s{extra}")


class Fleet:
    """The real programs of one scenario in a lab: `uptime-collector serve` behind the recording
    proxy on the collector host, the HTTP target on the target host, `uptime-agent run` on each
    agent host. Configs are files in `workdir`; logs go to `workdir/logs`."""

    def __init__(self, lab: Lab, workdir: Path, checks: list[dict[str, Any]], *,
                 agents: Sequence[str] | None = None, postgres: Postgres | None = None,
                 collector_extra: dict[str, Any] | None = None, agent_extra: dict[str, Any] | None = None,
                 agent_checks: dict[str, list[dict[str, Any]]] | None = None):
        self.lab = lab
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.agents = list(agents if agents is not None else lab.agents)
        self.tokens = {a: f"fault-token-{a}-{random.randrange(16**8):08x}" for a in self.agents}
        self.db_path = workdir / "collector.sqlite"
        self.postgres = postgres
        self.database_url = postgres.url if postgres is not None else f"sqlite+aiosqlite:///{self.db_path}"
        self.proxy_log = workdir / "proxy.jsonl"
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: Counter[str] = Counter()
        # what each agent had made durable, by snapshots of its spool (`record_spool`): id -> (check, slot)
        self.recorded: dict[str, dict[str, tuple[str, str]]] = {a: {} for a in self.agents}
        collector_cfg = {
            "listen": {"host": "127.0.0.1", "port": COLLECTOR_PORT},
            "database_url": self.database_url,
            # status_interval: the month-to-date reports block the collector's event loop for
            # seconds with 1-2 s checks (see test_faults_collector.py); once an hour keeps that
            # out of the scenarios' timing, except for the run at each start.
            "evaluation": {"interval": "250ms", "grace": "1500ms", "status_interval": "1h"},
            # a replay after a long partition sends many batches back to back: no rate limit here
            "rate_limit": {"requests_per_second": 1000, "burst": 1000},
            "agents": [{"id": a, "token": t} for a, t in self.tokens.items()],
            "checks": checks,
            **(collector_extra or {}),
        }
        (workdir / "collector.yml").write_text(json.dumps(collector_cfg, indent=1))
        self.agent_cfg = {
            "collector": {"url": f"http://{COLLECTOR_IP}:{PROXY_PORT}", "flush_interval": "200ms",
                          "heartbeat_interval": "2s", "request_timeout": "2s", "assignments_interval": "5s"},
            "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
            "spool": {"path": str(workdir / "spool-{agent_id}.sqlite")},
            "guard": {"block_private": False},  # the assigned checks probe the lab's 10.77.0.2
        }
        for key, value in (agent_extra or {}).items():
            if isinstance(value, dict):
                self.agent_cfg.setdefault(key, {}).update(value)
            else:
                self.agent_cfg[key] = value
        self.agent_checks = agent_checks or {}
        self.write_agent_configs()

    def write_agent_configs(self) -> None:
        for a in self.agents:
            cfg = dict(self.agent_cfg)
            if a in self.agent_checks:
                cfg = {**cfg, "checks": self.agent_checks[a]}
            (self.workdir / f"agent-{a}.yml").write_text(json.dumps(cfg, indent=1))

    # --- processes ---------------------------------------------------------------------------

    def start_target(self) -> None:
        self.procs["target"] = self.lab["target"].popen(
            programs.command("target", "--listen", f"{TARGET_IP}:80"), self.logs / "target.log")

    def start_proxy(self) -> None:
        self.procs["proxy"] = self.lab["collector"].popen(
            programs.command("proxy", "--listen", f"{COLLECTOR_IP}:{PROXY_PORT}",
                             "--upstream", f"http://127.0.0.1:{COLLECTOR_PORT}", "--log", str(self.proxy_log)),
            self.logs / "proxy.log")

    def start_collector(self) -> None:
        self.restarts["collector"] += 1
        self.procs["collector"] = self.lab["collector"].popen(
            [console_script("uptime-collector"), "serve", "--config", str(self.workdir / "collector.yml")],
            self.logs / "collector.log", cwd=self.workdir)

    def start_agent(self, agent: str) -> None:
        self.restarts[agent] += 1
        self.procs[agent] = self.lab[agent].popen(
            [console_script("uptime-agent"), "run", "--config", str(self.workdir / f"agent-{agent}.yml"), "--id", agent],
            self.logs / f"{agent}.log", env={"UPTIME_AGENT_TOKEN": self.tokens[agent]}, cwd=self.workdir)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=20)

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    async def start(self, agents: Iterable[str] | None = None) -> None:
        self.start_target()
        self.start_proxy()
        self.start_collector()
        await self.wait_collector()
        for a in (self.agents if agents is None else agents):
            self.start_agent(a)
        await self.wait_agents(self.agents if agents is None else list(agents))

    async def wait_collector(self, timeout: float = 30) -> None:
        await self.wait_http("collector", f"http://127.0.0.1:{COLLECTOR_PORT}/healthz", timeout, proc="collector")
        await self.wait_http("collector", f"http://{COLLECTOR_IP}:{PROXY_PORT}/healthz", timeout, proc="proxy")

    async def wait_agents(self, agents: Sequence[str], timeout: float = 30) -> dict[str, float]:
        """Until each agent answers /healthz with its checks scheduled; returns when (unix time)."""
        ready = {}
        for a in agents:
            await self.wait_http(a, f"http://127.0.0.1:{METRICS_PORT}/healthz", timeout, proc=a,
                                 accept=lambda reply: reply.json().get("checks", 0) > 0)
            ready[a] = time.time()
        return ready

    async def wait_http(self, role: str, url: str, timeout: float, proc: str | None = None,
                        accept: Callable[[Reply], bool] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = await self.lab[role].http("GET", url, timeout=2)
                if reply.status == 200 and (accept is None or accept(reply)):
                    return
            except OSError:
                pass
            if proc is not None and not self.alive(proc):
                raise AssertionError(f"{proc} exited with {self.procs[proc].returncode}:\n{self.log_tail(proc)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} in {role} did not answer within {timeout}s:\n"
                                     f"{self.log_tail(proc or role)}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every program (agents first), SIGKILL what does not end in time."""
        order = [a for a in self.agents if a in self.procs] + [n for n in ("collector", "proxy", "target") if n in self.procs]
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in order:
            try:
                self.procs[name].wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.procs[name].kill()
                self.procs[name].wait(5)

    def stop_agents(self) -> None:
        """SIGTERM the agents: each stops probing and ships what it still holds (one try, 5 s)."""
        agents = [a for a in self.agents if self.alive(a)]
        for a in agents:
            self.procs[a].send_signal(signal.SIGTERM)
        for a in agents:
            try:
                self.procs[a].wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.procs[a].kill()
                self.procs[a].wait(5)

    def final_rows(self) -> list:
        """The stored results once the agents have stopped: a snapshot in which nothing is still
        being produced, so that produced, sent, stored and spooled can be compared exactly."""
        self.stop_agents()
        return self.stored_rows()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # --- what the agents expose ----------------------------------------------------------------

    async def agent_metrics(self, agent: str) -> dict[str, float]:
        reply = await self.lab[agent].http("GET", f"http://127.0.0.1:{METRICS_PORT}/metrics")
        assert reply.status == 200
        values: dict[str, float] = {}
        for line in reply.body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def spool_count(self, agent: str) -> int:
        path = self.workdir / f"spool-{agent}.sqlite"
        if not path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            try:
                return db.execute("SELECT count(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    def spool_ids(self, agent: str) -> set[str]:
        path = self.workdir / f"spool-{agent}.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            return {row[0] for row in db.execute("SELECT id FROM results")}

    def _spool_query(self, agent: str, sql: str) -> list[tuple]:
        """Rows of a query on the agent's spool, read-only (also right after a kill -9: SQLite
        reads the committed WAL); none before the agent made the file or its tables."""
        path = self.workdir / f"spool-{agent}.sqlite"
        if not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            try:
                return db.execute(sql).fetchall()
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return []
                raise

    def spool_records(self, agent: str) -> dict[str, tuple[str, str]]:
        """id -> (check, slot as RFC 3339 Z) of every result in the agent's spool now."""
        out = {}
        for result_id, payload in self._spool_query(agent, "SELECT id, payload FROM results"):
            result = json.loads(payload)
            out[result_id] = (result["check"], z(parse_ts(result["slot"])))
        return out

    def spool_rejected(self, agent: str) -> int:
        """Results the agent set aside because the collector refused them for good."""
        return self._spool_query(agent, "SELECT count(*) FROM rejected")[0][0] if (
            self.workdir / f"spool-{agent}.sqlite").exists() else 0

    def record_spool(self, agent: str) -> dict[str, tuple[str, str]]:
        """Snapshot the agent's spool into `recorded` (the agent's own record of what it made
        durable); returns the snapshot. Taken right after a kill -9, it is exactly what the
        killed agent held; every such result must end up stored (`accounting_problems`)."""
        snapshot = self.spool_records(agent)
        self.recorded.setdefault(agent, {}).update(snapshot)
        return snapshot

    def acked_ids(self) -> set[str]:
        return {i for p in self.posts() if p["status"] == 200 for i in p["ids"]}

    def accounting_problems(self, rows: list, agents: Sequence[str] | None = None) -> list[str]:
        """Every result an agent made durable, by its own record (in its spool at any
        `record_spool`, or in a POST that reached the collector's host, or in its spool now), is
        stored exactly once, as that agent's (check, slot); no spool set anything aside as
        refused. A result spooled and lost, or stored twice, is named here by its id, whatever
        downtime the agent had."""
        agents = list(agents if agents is not None else self.agents)
        problems = []
        stored = Counter(r[0] for r in rows)
        key_of = {r[0]: (r[1], r[2], r[3]) for r in rows}
        expected: dict[str, tuple[str, str, str] | None] = {}
        for p in self.posts():
            if p.get("agent") in agents:
                for i in p["ids"]:
                    expected.setdefault(i, None)
        for agent in agents:
            for i, (check, slot) in {**self.recorded.get(agent, {}), **self.spool_records(agent)}.items():
                expected[i] = (agent, check, slot)
            if rejected := self.spool_rejected(agent):
                problems.append(f"{agent}: {rejected} results set aside as refused in its spool")
        for i, key in sorted(expected.items(), key=lambda kv: str(kv[1])):
            if stored[i] != 1:
                problems.append(f"result {i} {' '.join(key) if key else '(sent)'}: stored {stored[i]} times")
            elif key is not None and key_of[i] != key:
                problems.append(f"result {i}: stored as {key_of[i]}, spooled as {key}")
        return problems

    # --- what the collector got ---------------------------------------------------------------

    def posts(self) -> list[dict[str, Any]]:
        if not self.proxy_log.exists():
            return []
        records = []
        for line in self.proxy_log.read_text().splitlines():
            if line.endswith("}"):
                records.append(json.loads(line))
        return records

    def stored_rows(self) -> list[tuple[str, str, str, str, bool, str | None, float | None]]:
        """(result_id, agent, check, slot as RFC 3339 Z, ok, error, latency_ms) of every stored result."""
        if self.postgres is not None:
            rows = self.postgres.psql('SELECT result_id, agent_id, "check", extract(epoch from slot), ok, '
                                      "coalesce(error, ''), coalesce(latency_ms::text, '') FROM results")
            return [(rid, a, c, z(datetime.fromtimestamp(float(s), timezone.utc)), ok == "t", err or None,
                     float(lat) if lat else None) for rid, a, c, s, ok, err, lat in rows]
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)) as db:
            rows = db.execute('SELECT result_id, agent_id, "check", slot, ok, error, latency_ms FROM results').fetchall()
        return [(rid, a, c, z(parse_ts(s)), bool(ok), err, lat) for rid, a, c, s, ok, err, lat in rows]

    async def outages(self, policy: str) -> list[dict[str, Any]]:
        reply = await self.lab["collector"].http(
            "GET", f"http://127.0.0.1:{COLLECTOR_PORT}/api/v1/outages?policy={policy}")
        assert reply.status == 200, reply.body
        return reply.json()["outages"]

    async def wait_for_windows(self, policy: str, expected: list[tuple[str, str | None]], timeout: float) -> list[dict]:
        """Poll GET /api/v1/outages until the policy's windows are exactly `expected` [(start, end)]."""
        deadline = time.monotonic() + timeout
        while True:
            windows = await self.outages(policy)
            got = [(w["start"], w["end"]) for w in windows]
            if got == expected:
                return windows
            if time.monotonic() > deadline:
                raise AssertionError(f"policy {policy}: windows {got}, expected {expected}\n"
                                     f"{self.log_tail('collector')}")
            await asyncio.sleep(0.25)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s")
            await asyncio.sleep(interval)

    def acks_since(self, since: float, agent: str | None = None) -> int:
        return sum(1 for p in self.posts()
                   if p["t"] >= since and p["status"] == 200 and (agent is None or p["agent"] == agent))

    async def wait_acks(self, count: int, since: float, agent: str | None = None, timeout: float = 60) -> None:
        """Until the collector acknowledged `count` POSTs (of `agent`, or anyone) since `since`."""
        await self.wait_for(lambda: self.acks_since(since, agent) >= count, timeout,
                            f"{count} acknowledged POSTs{' of ' + agent if agent else ''}", interval=0.01)

    async def wait_drained(self, timeout: float = 60, agents: Sequence[str] | None = None,
                           rows: Callable[[], list] | None = None) -> None:
        """Until every agent's spool is empty and every id sent is stored."""
        agents = list(agents if agents is not None else self.agents)
        rows = rows or self.stored_rows

        def drained() -> bool:
            if any(self.spool_count(a) for a in agents):
                return False
            sent = {i for p in self.posts() for i in p["ids"]}
            return sent <= {r[0] for r in rows()}

        await self.wait_for(drained, timeout, "spools drained and everything sent stored")

    def figures(self, rows: list | None = None, agents: Sequence[str] | None = None) -> Figures:
        rows = self.stored_rows() if rows is None else rows
        agents = list(agents if agents is not None else self.agents)
        posts = [p for p in self.posts() if p.get("agent") in agents]
        sent_counter: Counter[str] = Counter(i for p in posts for i in p["ids"])
        acked = {i for p in posts if p["status"] == 200 for i in p["ids"]}
        stored_ids = {r[0] for r in rows if r[1] in agents}
        keys = Counter((r[1], r[2], r[3]) for r in rows if r[1] in agents)
        spooled = {i for a in agents for i in self.spool_ids(a)} if all(
            (self.workdir / f"spool-{a}.sqlite").exists() for a in agents) else set()
        recorded = {i for a in agents for i in self.recorded.get(a, {})}  # in a spool snapshot
        sent = set(sent_counter)
        return Figures(
            produced=len(sent | spooled | stored_ids | recorded),
            sent=len(sent),
            posts=len(posts),
            resent=sum(1 for n in sent_counter.values() if n > 1),
            absorbed=sum(p.get("duplicates") or 0 for p in posts if p["status"] == 200),
            acknowledged=len(acked),
            stored=sum(1 for r in rows if r[1] in agents),
            duplicates=sum(n - 1 for n in keys.values() if n > 1),
            lost=len((acked | sent | recorded) - stored_ids),
            spooled=len(spooled),
        )


def by_key(rows: Iterable[tuple]) -> dict[tuple[str, str, str], list[tuple]]:
    out: dict[tuple[str, str, str], list[tuple]] = {}
    for r in rows:
        out.setdefault((r[1], r[2], r[3]), []).append(r)
    return out


def slots_between(first: datetime, last: datetime, interval: float) -> list[str]:
    """RFC 3339 strings of the slots first, first + interval, ..., last (inclusive)."""
    out, step, t = [], timedelta(seconds=interval), first
    while t <= last:
        out.append(z(t))
        t += step
    return out


def gaps(slots: Iterable[str], interval: float) -> list[tuple[str, str]]:
    """Runs of missing slots between the first and last present one: [(first missing, last missing)]."""
    present = sorted(parse_ts(s) for s in set(slots))
    step = timedelta(seconds=interval)
    out = []
    for a, b in zip(present, present[1:]):
        if b - a > step:
            out.append((z(a + step), z(b - step)))
    return out


class TerminalReport:
    """Prints scenario figures to the terminal even while pytest captures output."""

    def __init__(self, capsys=None):
        self.capsys = capsys

    def __call__(self, text: str) -> None:
        if self.capsys is not None:
            with self.capsys.disabled():
                print("\n" + text, flush=True)
        else:
            print(text, flush=True)
        summary = os.environ.get("UPTIME_FAULTS_SUMMARY")
        if summary:
            with open(summary, "a") as out:
                out.write(text + "\n")
