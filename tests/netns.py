"""Fault-injection harness: real hosts in network namespaces, real programs inside them.

Layout of a `Lab` (names unique per run: `upf-<pid>-<random>-<role>`; needs root and iproute2):

    switch namespace: bridge br0 ---+--- veth --- target     10.77.0.2   (HTTP server, answers ICMP)
                                    +--- veth --- collector  10.77.0.3   (recording proxy :8080 ->
                                    |                                     uptime-collector 127.0.0.1:8081)
                                    +--- veth --- us-east    10.77.0.11  (uptime-agent)
                                    +--- ...      ...        10.77.0.12-16

The 10.77.0.0/24 addresses exist only inside these namespaces: the root namespace has no route
to them, and nothing inside has a route anywhere else. Every namespace is deleted, and every
process in it killed, when the lab closes (also after a failure, at interpreter exit, and for
labs of earlier runs whose process is gone).

Faults, each applied inside one host's namespace:
  * `blackhole(host, ip)` / `unblackhole`: a blackhole route, so connects fail at once;
  * `partition(host, ip)` / `heal`: iptables DROP both ways, so packets vanish (timeouts);
  * `impair(host, loss=..., delay_ms=...)` / `clear_impairments`: random loss on the host's link
    (both directions) and added latency on its egress. With tc netem where the kernel has it
    (netem on the host's eth0 for its egress, and on its bridge port for the packets towards
    it); where it has not (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"
    when there is no `sch_netem`), with a stand-in: iptables' `statistic` match drops packets
    at random both ways, and an NFQUEUE daemon of this module releases each packet the host
    sends `delay_ms` later, in order. `netem_support()` tries netem once per run (in a
    namespace of its own); `Lab.impairment` names what is used, for the scenarios' figures.
    UPTIME_FAULTS_NETEM=0 forces the stand-in.

Missing prerequisites (not root, no ip or iptables, no PostgreSQL server binaries) skip a
scenario, except under CI (CI set to anything non-empty), where they fail it: see `require`.

Programs of this module, run inside namespaces (`python tests/netns.py COMMAND ...`):
  * `target`: the HTTP target (GET / -> 200 "ok");
  * `proxy`: a recording reverse proxy in front of the collector: it forwards every request
    unchanged and appends, for each POST /api/v1/results, the result ids and the collector's
    status to a JSON Lines file, flushed before the answer goes back. That file is the
    outside observer of what agents sent and what the collector acknowledged;
  * `delay`: the NFQUEUE latency daemon.

The test process itself reaches into namespaces through threads that `setns()` into them
(`Host.http`, `Host.run_async`), so it needs no address or route of its own in the lab.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
PREFIX = "upf"
SUBNET = "10.77.0"
TARGET_IP = f"{SUBNET}.2"
COLLECTOR_IP = f"{SUBNET}.3"
PROXY_PORT = 8080
COLLECTOR_PORT = 8081  # the collector's own port, on 127.0.0.1 inside the collector host
METRICS_PORT = 9101  # each agent's /metrics, on 127.0.0.1 inside its host
AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why this machine cannot run the lab (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    for tool in ("iptables", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(condition: object, why: str | None) -> None:
    """A prerequisite of a scenario: without it the test is skipped, or, under CI (the
    environment variable CI set to anything non-empty), failed, so that a CI run cannot pass
    with the fault scenarios silently skipped."""
    if condition:
        return
    import pytest

    why = why or "a prerequisite is missing"
    if in_ci():
        pytest.fail(f"{why}; CI is set, so this fault scenario fails instead of being skipped", pytrace=False)
    pytest.skip(why)


def require_lab() -> None:
    """Root, ip and iptables: what every `Lab` needs."""
    reason = unavailable()
    require(reason is None, reason)


def require_postgres_server() -> None:
    """The PostgreSQL server binaries `Postgres` runs (initdb, pg_ctl, postgres, ...)."""
    reason = postgres_unavailable()
    require(reason is None, reason)


def console_script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"console script {name} is not installed")
    return found


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# --- threads inside a namespace --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def _urlopen(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Reply(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read(), dict(err.headers))


# --- hosts and the lab -----------------------------------------------------------------------

@dataclass
class Host:
    role: str
    netns: str
    ip: str
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    port: str = ""  # its veth's peer on the switch's bridge
    _delay: subprocess.Popen | None = None
    _impaired: bool = False
    _netem: bool = False

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        return sh(*self.cmd(*args), check=check, timeout=timeout)

    def popen(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None, user: str | None = None) -> subprocess.Popen:
        """Start a program in this host. `ip netns exec` execs it, so the Popen's pid is the
        program's own pid (kill -9 hits the program, not a wrapper); with `user`, runuser stands
        in between (used for PostgreSQL only, which is stopped through pg_ctl)."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        with open(log, "ab") as out:
            return subprocess.Popen(
                self.cmd(*prefix, *args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=cwd, start_new_session=True,
            )

    # calls from the test process, made from a thread that lives in this namespace
    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix=f"netns-{self.role}", initializer=_enter_netns,
                initargs=(self.netns,))
        return self._executor

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    async def http(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
                   timeout: float = 5.0) -> Reply:
        """An HTTP request from inside this host (urllib, in a thread in its namespace)."""
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        return await self.call(_urlopen, method, url, data, headers, timeout)

    async def run_async(self, coroutine_factory: Callable[[], Any]) -> Any:
        """Run a coroutine on an event loop of its own, in a thread in this namespace (sockets
        it opens, and threads it starts, belong to the namespace)."""
        return await self.call(lambda: asyncio.run(coroutine_factory()))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# --- tc netem, or the stand-in ---------------------------------------------------------------

_NETEM: tuple[bool, str] | None = None
_NETEM_LOCK = threading.Lock()


def netem_support() -> tuple[bool, str]:
    """Whether `tc qdisc add dev X root netem loss 1%` works in a network namespace, and why
    not; tried once per run (at the first `Lab.create`), on a veth in a namespace of its own."""
    global _NETEM
    with _NETEM_LOCK:
        if _NETEM is None:
            _NETEM = _probe_netem()
        return _NETEM


def _probe_netem() -> tuple[bool, str]:
    if os.environ.get("UPTIME_FAULTS_NETEM", "").strip().lower() in ("0", "no", "false", "off"):
        return False, "UPTIME_FAULTS_NETEM=0"
    if shutil.which("tc") is None:
        return False, "tc (iproute2) is not installed"
    sweep_stale_labs()
    name = f"{PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}-netemprobe"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        sh("ip", "-n", name, "link", "set", "probe0", "up")
        proc = sh("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "probe0", "root", "netem", "loss", "1%",
                  check=False)
        if proc.returncode == 0:
            return True, "tc netem works"
        why = proc.stderr.strip() or proc.stdout.strip() or f"tc exited with {proc.returncode}"
        return False, why.removeprefix("Error: ").rstrip(".")
    finally:
        _kill_namespace(name)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4f}".rstrip("0").rstrip(".") + "%"


_OPEN_LABS: list["Lab"] = []


def _close_all_labs() -> None:
    for lab in list(_OPEN_LABS):
        lab.destroy()


atexit.register(_close_all_labs)


class Lab:
    """Namespaces, a bridge and veth links; see the module docstring."""

    def __init__(self, agents: Sequence[str] = AGENTS):
        self.tag = f"{PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        roles = [("target", TARGET_IP), ("collector", COLLECTOR_IP)]
        roles += [(a, f"{SUBNET}.{11 + i}") for i, a in enumerate(agents)]
        for role, ip in roles:
            self.hosts[role] = Host(role, f"{self.tag}-{role}", ip)
        self._created: list[str] = []

    @property
    def agents(self) -> list[str]:
        return [r for r in self.hosts if r not in ("target", "collector")]

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def create(self) -> Lab:
        sweep_stale_labs()
        netem_support()  # decided before any scenario's timing depends on it
        _OPEN_LABS.append(self)
        try:
            sh("ip", "netns", "add", self.switch)
            self._created.append(self.switch)
            sw = ["ip", "-n", self.switch]
            sh(*sw, "link", "add", "br0", "type", "bridge")
            sh(*sw, "link", "set", "br0", "up")
            sh(*sw, "link", "set", "lo", "up")
            for index, host in enumerate(self.hosts.values()):
                sh("ip", "netns", "add", host.netns)
                self._created.append(host.netns)
                sh("ip", "-n", host.netns, "link", "set", "lo", "up")
                port = host.port = f"p{index}"
                sh(*sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
                sh(*sw, "link", "set", port, "master", "br0")
                sh(*sw, "link", "set", port, "up")
                sh("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
                sh("ip", "-n", host.netns, "link", "set", "eth0", "up")
                # chains of our own, so that clearing faults never touches anything else
                for chain, hook in (("UPF_IN", "INPUT"), ("UPF_OUT", "OUTPUT")):
                    host.run("iptables", "-N", chain)
                    host.run("iptables", "-A", hook, "-j", chain)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        for host in self.hosts.values():
            host.close()
        for name in reversed(self._created):
            _kill_namespace(name)
        self._created.clear()
        if self in _OPEN_LABS:
            _OPEN_LABS.remove(self)

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.destroy()

    # --- faults ------------------------------------------------------------------------------

    def blackhole(self, role: str, ip: str) -> None:
        self.hosts[role].run("ip", "route", "add", "blackhole", f"{ip}/32")

    def unblackhole(self, role: str, ip: str) -> None:
        self.hosts[role].run("ip", "route", "del", "blackhole", f"{ip}/32")

    def partition(self, role: str, ip: str) -> None:
        host = self.hosts[role]
        host.run("iptables", "-A", "UPF_OUT", "-d", ip, "-j", "DROP")
        host.run("iptables", "-A", "UPF_IN", "-s", ip, "-j", "DROP")

    def heal(self, role: str, ip: str) -> None:
        host = self.hosts[role]
        host.run("iptables", "-D", "UPF_OUT", "-d", ip, "-j", "DROP")
        host.run("iptables", "-D", "UPF_IN", "-s", ip, "-j", "DROP")

    def isolate(self, role: str) -> None:
        """The host's whole link drops everything (a host that is down, seen from the network)."""
        host = self.hosts[role]
        host.run("iptables", "-A", "UPF_IN", "-i", "eth0", "-j", "DROP")
        host.run("iptables", "-A", "UPF_OUT", "-o", "eth0", "-j", "DROP")

    def unisolate(self, role: str) -> None:
        host = self.hosts[role]
        host.run("iptables", "-D", "UPF_IN", "-i", "eth0", "-j", "DROP")
        host.run("iptables", "-D", "UPF_OUT", "-o", "eth0", "-j", "DROP")

    def impair_many(self, roles: Iterable[str], **kwargs: Any) -> None:
        """`impair` on several hosts at once (in parallel: each is a few `ip netns exec` calls)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(self.impair, role, **kwargs) for role in roles]:
                future.result()

    def clear_many(self, roles: Iterable[str]) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(self.clear_impairments, role) for role in roles]:
                future.result()

    @property
    def netem(self) -> bool:
        """Whether `impair` uses tc netem (else the iptables/NFQUEUE stand-in)."""
        return netem_support()[0]

    @property
    def impairment(self) -> str:
        """What `impair` uses, for a scenario's figures."""
        works, why = netem_support()
        if works:
            return "tc-netem"
        return f"iptables-statistic+nfqueue-delay (tc netem unavailable: {why})"

    def impair(self, role: str, *, loss: float = 0.0, delay_ms: float = 0.0, log_dir: Path | None = None) -> None:
        """Random loss (0..1, each direction) and added egress latency on the host's link."""
        host = self.hosts[role]
        if host._impaired:
            self.clear_impairments(role)
        host._impaired = True
        if self.netem:
            self._impair_netem(host, loss, delay_ms)
            return
        if loss > 0:
            rules = "".join(
                f"-A {chain} {flag} eth0 -m statistic --mode random --probability {loss:.4f} -j DROP\n"
                for chain, flag in (("UPF_OUT", "-o"), ("UPF_IN", "-i")))
            proc = subprocess.run(host.cmd("iptables-restore", "--noflush"), input=f"*filter\n{rules}COMMIT\n",
                                  capture_output=True, text=True, timeout=20)
            if proc.returncode != 0:
                raise RuntimeError(f"iptables-restore in {role}: {proc.stderr}")
        if delay_ms > 0:
            ready = (log_dir or Path("/tmp")) / f"delay-{host.netns}.ready"
            ready.unlink(missing_ok=True)
            host._delay = host.popen(
                [sys.executable, str(THIS), "delay", "--queue", "7", "--delay-ms", str(delay_ms), "--ready", str(ready)],
                (log_dir or Path("/tmp")) / f"delay-{role}.log")
            deadline = time.monotonic() + 10
            while not ready.exists():
                if host._delay.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"delay daemon in {role} did not start")
                time.sleep(0.02)
            host.run("iptables", "-A", "UPF_OUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", "7", "--queue-bypass")

    def _impair_netem(self, host: Host, loss: float, delay_ms: float) -> None:
        """netem on the host's eth0 (its egress: loss and delay), and on its bridge port (the
        packets towards it: loss), so that loss applies both ways as with the stand-in."""
        if loss <= 0 and delay_ms <= 0:
            return
        host._netem = True
        egress = ["loss", _percent(loss)] if loss > 0 else []
        if delay_ms > 0:
            egress += ["delay", f"{delay_ms:g}ms"]
        host.run("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "limit", "100000", *egress)
        if loss > 0:
            sh("ip", "netns", "exec", self.switch, "tc", "qdisc", "add", "dev", host.port, "root", "netem",
               "limit", "100000", "loss", _percent(loss))

    def clear_impairments(self, role: str) -> None:
        host = self.hosts[role]
        host._impaired = False
        if host._netem:
            host._netem = False
            host.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            sh("ip", "netns", "exec", self.switch, "tc", "qdisc", "del", "dev", host.port, "root", check=False)
        for chain in ("UPF_OUT", "UPF_IN"):
            listing = host.run("iptables", "-S", chain).stdout.splitlines()
            for rule in listing:
                if "statistic" in rule or "NFQUEUE" in rule:
                    host.run("iptables", *rule.replace("-A ", "-D ", 1).split())
        if host._delay is not None:
            host._delay.kill()
            host._delay.wait(5)
            host._delay = None


@contextlib.contextmanager
def isolated_host(role: str = "isolated"):
    """A namespace with nothing but loopback: no route leads anywhere from it, so a connection
    that a test expects never to be attempted cannot reach a real address if it is."""
    sweep_stale_labs()
    host = Host(role, f"{PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}-{role}", "127.0.0.1")
    sh("ip", "netns", "add", host.netns)
    try:
        sh("ip", "-n", host.netns, "link", "set", "lo", "up")
        yield host
    finally:
        host.close()
        _kill_namespace(host.netns)


def _namespace_pids(name: str) -> list[int]:
    proc = sh("ip", "netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.strip().isdigit()]


def _kill_namespace(name: str) -> None:
    """Kill every process of a namespace this harness made (they are all ours), then delete it."""
    for _ in range(50):
        pids = _namespace_pids(name)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    sh("ip", "netns", "del", name, check=False)


def sweep_stale_labs() -> None:
    """Delete namespaces left by labs of runs whose process is gone (a test run killed hard)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) < 4 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # its run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_namespace(name)


# --- a PostgreSQL server of the test's own ------------------------------------------------------

POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_isready", "psql")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout) that has every
    program `Postgres` runs (POSTGRES_TOOLS), or None."""
    found = sorted((d for d in Path("/usr/lib/postgresql").glob("*/bin")
                    if all(os.access(d / tool, os.X_OK) for tool in POSTGRES_TOOLS)),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def postgres_unavailable() -> str | None:
    """Why no test PostgreSQL cluster can be made here, or None."""
    import pwd

    if os.geteuid() != 0:
        return "a test PostgreSQL cluster is run as the postgres user: that needs root"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user to run a test PostgreSQL cluster as"
    if postgres_bin() is not None:
        return None
    return (f"no PostgreSQL server installed: no /usr/lib/postgresql/*/bin with {', '.join(POSTGRES_TOOLS)} "
            "(Debian/Ubuntu: apt-get install postgresql)")


class Postgres:
    """A PostgreSQL cluster made by the test (initdb into a temporary folder as the `postgres`
    user, trust authentication) and run inside one lab host, listening on 127.0.0.1:5432 there
    and on a Unix socket in its folder, through which the test process reaches it."""

    def __init__(self, host: Host, logs: Path, port: int = 5432, database: str = "uptime"):
        self.host = host
        self.logs = logs
        self.port = port
        self.database = database
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
        self.root = Path(tempfile_mkdtemp("upf-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """The collector's database URL, valid inside `host`."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def init(self) -> Postgres:
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        sh("runuser", "-u", "postgres", "--", str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
           "-U", "postgres", "--no-sync", "-E", "UTF8", timeout=120)
        return self

    def start(self, timeout: float = 30) -> None:
        self.restarts += 1
        self.proc = self.host.popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "max_connections=60"],
            self.logs / "postgres.log", user="postgres")
        deadline = time.monotonic() + timeout
        while sh(str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port),
                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{(self.logs / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self, mode: str = "immediate") -> None:
        """`pg_ctl stop -m immediate` is a crash as far as clients and recovery are concerned."""
        sh("runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "stop", "-D", str(self.data),
           "-m", mode, "-w", check=False, timeout=60)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def psql(self, sql: str, database: str | None = None) -> list[list[str]]:
        out = sh(str(self.bin / "psql"), "-X", "-q", "-At", "-F", "\t", "-h", str(self.socket_dir), "-p", str(self.port),
                 "-U", "postgres", "-d", database or self.database, "-c", sql, timeout=60).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def create_database(self) -> None:
        self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def tempfile_mkdtemp(prefix: str) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return path


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
            [sys.executable, str(THIS), "target", "--listen", f"{TARGET_IP}:80"], self.logs / "target.log")

    def start_proxy(self) -> None:
        self.procs["proxy"] = self.lab["collector"].popen(
            [sys.executable, str(THIS), "proxy", "--listen", f"{COLLECTOR_IP}:{PROXY_PORT}",
             "--upstream", f"http://127.0.0.1:{COLLECTOR_PORT}", "--log", str(self.proxy_log)],
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


# --- programs run inside namespaces --------------------------------------------------------------

def _target_main(listen: str) -> None:
    from aiohttp import web

    host, _, port = listen.rpartition(":")

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", root)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


def _proxy_main(listen: str, upstream: str, log_path: str) -> None:
    import aiohttp
    from aiohttp import web

    host, _, port = listen.rpartition(":")
    log = open(log_path, "a", buffering=1)
    hop_headers = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_headers}
        record: dict[str, Any] | None = None
        if request.method == "POST" and request.path == "/api/v1/results":
            try:
                payload = json.loads(body)
                record = {"t": time.time(), "agent": payload.get("agent"),
                          "ids": [r.get("id") for r in payload.get("results", [])]}
            except (ValueError, AttributeError):
                record = {"t": time.time(), "agent": None, "ids": []}
        t_upstream = time.monotonic()
        try:
            async with session.request(request.method, upstream + request.path_qs, data=body,
                                       headers=headers, allow_redirects=False) as resp:
                data = await resp.read()
                status = resp.status
                out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in hop_headers | {"content-encoding"}}
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            status, data, out_headers = 502, json.dumps({"error": f"proxy: collector unreachable: {exc!r}"}).encode(), {
                "Content-Type": "application/json"}
        if record is not None:
            record["status"] = status
            record["upstream_seconds"] = round(time.monotonic() - t_upstream, 3)
            if status == 200:
                with contextlib.suppress(ValueError):
                    answer = json.loads(data)
                    record["accepted"], record["duplicates"] = answer.get("accepted"), answer.get("duplicates")
            log.write(json.dumps(record, separators=(",", ":")) + "\n")
            log.flush()
        return web.Response(status=status, body=data, headers=out_headers)

    async def session_ctx(app: web.Application):
        app["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                               connector=aiohttp.TCPConnector(force_close=True))
        yield
        await app["session"].close()

    app = web.Application(client_max_size=256 * 1024**2)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


def _delay_main(queue: int, delay_ms: float, ready: str | None) -> None:
    """Hold every packet the kernel queues to NFQUEUE `queue` for `delay_ms`, then accept it
    (in arrival order). A userspace stand-in for `tc qdisc add ... netem delay`."""
    import heapq
    import select
    import socket
    import struct

    NETLINK_NETFILTER, SUBSYS_QUEUE = 12, 3
    MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
    NLM_F_REQUEST, NLM_F_ACK = 1, 4
    NF_ACCEPT = 1

    def attr(kind: int, data: bytes) -> bytes:
        length = 4 + len(data)
        return struct.pack("HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)

    def message(kind: int, flags: int, attrs: list[bytes]) -> bytes:
        payload = struct.pack("BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
        return struct.pack("IHHII", 16 + len(payload), (SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST | flags, 0, 0) + payload

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE
    sock.bind((0, 0))

    def config(attrs: list[bytes]) -> None:
        sock.send(message(MSG_CONFIG, NLM_F_ACK, attrs))
        answer = sock.recv(65536)
        error = struct.unpack_from("i", answer, 16)[0]
        if error:
            raise OSError(-error, f"nfqueue config: {os.strerror(-error)}")

    config([attr(1, struct.pack("BBH", 1, 0, socket.htons(socket.AF_INET)))])  # CMD_BIND
    config([attr(2, struct.pack("!IB", 0, 1))])  # PARAMS: copy meta only
    if ready:
        Path(ready).write_text("ready")
    held: list[tuple[float, int, int]] = []
    seq = 0
    delay = delay_ms / 1000
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            try:
                data = sock.recv(1 << 20)
            except OSError:  # ENOBUFS: the kernel dropped queued packets; carry on
                continue
            offset = 0
            now = time.monotonic()
            while offset + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("IHHII", data, offset)
                if length < 16:
                    break
                if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
                    pos = offset + 20
                    while pos + 4 <= offset + length:
                        alen, atype = struct.unpack_from("HH", data, pos)
                        if alen < 4:
                            break
                        if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR
                            packet_id = struct.unpack_from("!I", data, pos + 4)[0]
                            heapq.heappush(held, (now + delay, seq, packet_id))
                            seq += 1
                        pos += (alen + 3) & ~3
                offset += (length + 3) & ~3
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, packet_id = heapq.heappop(held)
            sock.send(message(MSG_VERDICT, 0, [attr(2, struct.pack("!II", NF_ACCEPT, packet_id))]))


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("target")
    p.add_argument("--listen", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--log", required=True)
    p = sub.add_parser("delay")
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--ready")
    args = parser.parse_args(argv)
    if args.command == "target":
        _target_main(args.listen)
    elif args.command == "proxy":
        _proxy_main(args.listen, args.upstream, args.log)
    else:
        _delay_main(args.queue, args.delay_ms, args.ready)


if __name__ == "__main__":
    main()
