"""The lab: real hosts in network namespaces, and the faults applied to them.

Layout of a `Lab` (names unique per run: `upf-<pid>-<random>-<role>`; needs root and iproute2):

    switch namespace: bridge br0 ---+--- veth --- target     10.77.0.2   (HTTP server, answers ICMP)
                                    +--- veth --- collector  10.77.0.3   (recording proxy :8080 ->
                                    |                                     uptime-collector 127.0.0.1:8081)
                                    +--- veth --- us-east    10.77.0.11  (uptime-agent)
                                    +--- ...      ...        10.77.0.12-16

The 10.77.0.0/24 addresses exist only inside these namespaces: the root namespace has no route
to them, and nothing inside has a route anywhere else. Every namespace is deleted, and every
process in it killed, when the lab closes (also after a failure, at interpreter exit, and for
labs of earlier runs whose process is gone: `sweep_stale_labs`). `isolated_host` is a single
namespace with nothing but loopback.

Faults, each applied inside one host's namespace:
  * `blackhole(host, ip)` / `unblackhole`: a blackhole route, so connects fail at once;
  * `partition(host, ip)` / `heal`: iptables DROP both ways, so packets vanish (timeouts);
  * `isolate(host)` / `unisolate`: iptables DROP of everything on the host's link (a host that
    is down, seen from the network);
  * `impair(host, loss=..., delay_ms=...)` / `clear_impairments`: random loss on the host's link
    (both directions) and added latency on its egress. With tc netem where the kernel has it
    (netem on the host's eth0 for its egress, and on its bridge port for the packets towards
    it); where it has not (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"
    when there is no `sch_netem`), with a stand-in: iptables' `statistic` match drops packets
    at random both ways, and an NFQUEUE daemon (`delay` in netlab/programs.py) releases each
    packet the host sends `delay_ms` later, in order. `netem_support()` tries netem once per
    run (in a namespace of its own); `Lab.impairment` names what is used, for the scenarios'
    figures. UPTIME_FAULTS_NETEM=0 forces the stand-in.

Missing prerequisites (not root, no ip or iptables; no PostgreSQL server binaries, see
netlab/postgres.py) skip a scenario, except under CI (CI set to anything non-empty), where they
fail it: see `require`.

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
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import programs

PREFIX = "upf"
SUBNET = "10.77.0"
TARGET_IP = f"{SUBNET}.2"
COLLECTOR_IP = f"{SUBNET}.3"
PROXY_PORT = 8080
COLLECTOR_PORT = 8081  # the collector's own port, on 127.0.0.1 inside the collector host
METRICS_PORT = 9101  # each agent's /metrics, on 127.0.0.1 inside its host
AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
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
                programs.command("delay", "--queue", "7", "--delay-ms", str(delay_ms), "--ready", str(ready)),
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
