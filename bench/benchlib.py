"""Helpers shared by the benchmarks in bench/: processes (pinned with taskset, always stopped by
their own pid), loopback targets (nginx), a stub collector, Prometheus scrapes, percentiles,
memory and CPU readings, and the table printer.

Nothing here is part of the product; every loop is bounded in count and time, and every address
used is on the loopback range.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: uptime-agent, uptime-collector
CLK_TCK = os.sysconf("SC_CLK_TCK")
console = Console(width=int(os.environ.get("BENCH_WIDTH", "210")))


# --- processes -------------------------------------------------------------------------------


# The machine may be shared with other work (other sessions' test suites): the measured processes
# run at the highest nice priority (-20: about 98 % of a core contended by one normal process),
# and each benchmark prints what else was busy. BENCH_NICE=0 turns this off.
NICE = int(os.environ.get("BENCH_NICE", "-20"))


def taskset(cpus: str | None, argv: list[str]) -> list[str]:
    prefix = ["nice", "-n", str(NICE)] if NICE and os.geteuid() == 0 else []
    return [*prefix, *(["taskset", "-c", cpus] if cpus is not None else []), *argv]


@dataclass
class Procs:
    """Processes this benchmark started; `stop_all` ends each one by its own pid (SIGTERM, then
    SIGKILL after a grace period). Use as a context manager."""

    logdir: Path
    started: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cpus: str | None = None, env: dict | None = None,
              cwd: str | Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            taskset(cpus, argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
        log.close()
        proc.bench_name = name  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if proc in self.started:
            self.started.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc, grace=5.0)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"uptime-bench-{prefix}-"))
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - we retry until the deadline
            last_error = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}" + (f": {last_error}" if last_error else ""))


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    def ok():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        http_get(url, timeout=2)
        return True

    wait_until(ok, timeout, url, interval=0.1)


# --- loopback targets ------------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log error;
events {{ worker_connections 32768; multi_accept on; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
{listens}
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}
}}
"""


def target_addresses(count: int, block: int = 1) -> list[str]:
    """Loopback addresses for the HTTP targets: 127.0.BLOCK.1, 127.0.BLOCK.2, ...

    Every probe opens (and the target closes) a fresh connection, which leaves a TIME_WAIT socket
    for 60 s on the target's side; benchmark steps use address blocks of their own so that one
    step's TIME_WAIT sockets never meet the next step's new connections."""
    return [f"127.0.{block}.{i}" for i in range(1, count + 1)]


def start_nginx(procs: Procs, work: Path, addresses: list[str], port: int, cpus: str | None) -> list[str]:
    """One nginx worker answering 200 "ok" on each address:port; returns the target URLs."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is needed: apt-get install nginx-light")
    listens = "\n".join(f"    listen {a}:{port} backlog=4096;" for a in addresses)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, listens=listens))
    proc = procs.start("nginx", [nginx, "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log")], cpus=cpus)
    urls = [f"http://{a}:{port}/" for a in addresses]
    for url in urls:
        wait_http(url, 15, proc)
    return urls


# --- Prometheus text -------------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    """{sample name: [(labels, value), ...]} from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    text = http_get(url, timeout=30).decode()
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(samples: dict, name: str, **match) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


def histogram_buckets(samples: dict, name: str) -> list[tuple[float, float]]:
    """[(upper bound, cumulative count)] sorted by bound, summed over all label sets."""
    acc: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        acc[le] = acc.get(le, 0.0) + value
    return sorted(acc.items())


def histogram_delta(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    prev = dict(before)
    return [(le, count - prev.get(le, 0.0)) for le, count in after]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile (linear interpolation inside the bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return buckets[-1][0]


def share_at_most(buckets: list[tuple[float, float]], bound: float) -> float:
    """Fraction of observations <= bound (bound must be a bucket edge)."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    for le, count in buckets:
        if le >= bound:
            return count / buckets[-1][1]
    return 1.0


# --- numbers ---------------------------------------------------------------------------------


def percentile(values, q: float) -> float:
    """Nearest-rank percentile of a list (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mib(pid: int) -> float:
    """Peak resident set (VmHWM) of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def busy_elsewhere(exclude: set[int] | None = None, sample: float = 0.5) -> str:
    """What else used CPU on the machine during a short sample (benchmarks share it)."""
    import psutil

    exclude = (exclude or set()) | {os.getpid()}
    procs = []
    for p in psutil.process_iter(["pid", "name"]):
        if p.info["pid"] in exclude:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    time.sleep(sample)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 20:
            busy.append(f"{p.info['name']}({p.info['pid']}) {pct:.0f}%")
    load = os.getloadavg()
    return f"load {load[0]:.2f}" + (f"; other busy processes: {', '.join(busy)}" if busy else "; no other busy process")


# --- output ----------------------------------------------------------------------------------


def print_table(title: str, columns: list[str], rows: list[list], notes: list[str] | None = None) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*[fmt(c) for c in row])
    console.print(table)
    for note in notes or []:
        console.print(f"  {note}", highlight=False)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def save_json(name: str, data: dict) -> Path:
    """Keep the raw figures of a run next to the scripts (bench/out/NAME.json) for RESULTS.md."""
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def header(title: str) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
                  f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
                  f"{busy_elsewhere()}", highlight=False)


# --- prometheus-blackbox-exporter ------------------------------------------------------------

BLACKBOX_CONFIG = """
modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
  icmp:
    prober: icmp
    timeout: 1s
    icmp:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""


def start_blackbox(procs: Procs, work: Path, cpus: str | None) -> tuple[subprocess.Popen, int]:
    """Debian's prometheus-blackbox-exporter on 127.0.0.1:<free port>; (process, port).
    Pinned with taskset, Go sees one CPU and sets GOMAXPROCS=1 accordingly."""
    exe = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
    if not Path(exe).exists():
        raise SystemExit("prometheus-blackbox-exporter is needed: apt-get install prometheus-blackbox-exporter")
    conf = work / "blackbox.yml"
    conf.write_text(BLACKBOX_CONFIG)
    port = free_port()
    proc = procs.start("blackbox", [exe, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}",
                                    "--log.level=error"], cpus=cpus)
    wait_http(f"http://127.0.0.1:{port}/metrics", 15, proc)
    return proc, port


def blackbox_version() -> str:
    exe = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).split("\n")[0].replace("blackbox_exporter, version ", "")
    except OSError:
        return "?"


@dataclass
class DriveResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # open loop: requests not sent because `concurrency` were already in flight
    wall: float = 0.0
    latencies: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.wall if self.wall else float("nan")

    @property
    def ok_rate(self) -> float:
        return self.ok / self.wall if self.wall else float("nan")


async def drive_probe_endpoint(port: int, targets: list[str], module: str, *, concurrency: int,
                               rate: float | None = None, duration: float | None = None,
                               count: int | None = None, scrape_timeout: float = 2.0) -> DriveResult:
    """Ask blackbox_exporter for probes: GET /probe?module=M&target=T, success = `probe_success 1`.

    Open loop (`rate` and `duration`): every 10 ms the requests due by then are started, at most
    `concurrency` in flight (the rest are counted as skipped). Closed loop (`count`): `count`
    requests, `concurrency` in flight. Keep-alive connections to the exporter; the exporter's own
    probes open fresh connections (HTTP) or send fresh echo requests (ICMP)."""
    import asyncio
    from urllib.parse import quote

    import aiohttp

    res = DriveResult()
    urls = [f"http://127.0.0.1:{port}/probe?module={module}&target={quote(t, safe='')}" for t in targets]
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(scrape_timeout)}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    in_flight = 0
    tasks: set = set()

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=scrape_timeout + 5)) as session:
        async def one(url: str) -> None:
            nonlocal in_flight
            t0 = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as resp:
                    body = await resp.read()
                good = resp.status == 200 and b"\nprobe_success 1" in body
            except (aiohttp.ClientError, asyncio.TimeoutError):
                good = False
            res.latencies.append(time.perf_counter() - t0)
            if good:
                res.ok += 1
            else:
                res.failed += 1
            in_flight -= 1

        def launch(url: str) -> None:
            nonlocal in_flight
            in_flight += 1
            res.sent += 1
            task = asyncio.ensure_future(one(url))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        start = time.perf_counter()
        if count is not None:
            sem = asyncio.Semaphore(concurrency)

            async def bounded(url: str) -> None:
                nonlocal in_flight
                async with sem:
                    in_flight += 1
                    res.sent += 1
                    await one(url)

            await asyncio.gather(*(bounded(urls[i % len(urls)]) for i in range(count)))
        else:
            assert rate is not None and duration is not None
            due_total, i = 0.0, 0
            end = start + duration
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                due = int((now - start) * rate) - int(due_total)
                for _ in range(max(0, due)):
                    if in_flight >= concurrency:
                        res.skipped += 1
                    else:
                        launch(urls[i % len(urls)])
                    i += 1
                due_total += max(0, due)
                await asyncio.sleep(0.01)
            if tasks:
                await asyncio.wait(list(tasks), timeout=scrape_timeout + 6)
        res.wall = time.perf_counter() - start if count is not None else duration  # open loop: the offered window
    return res


def pin_self(cpus: set[int] | None) -> None:
    """Pin this (orchestrating) process to `cpus`, so drivers stay off the measured core, and give
    it the same raised priority as the measured processes."""
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if NICE and os.geteuid() == 0:
            os.nice(NICE)
    except OSError:
        pass


def remove_workdir(path: Path) -> None:
    """Delete a benchmark's temporary folder (set BENCH_KEEP=1 to keep it for inspection)."""
    if os.environ.get("BENCH_KEEP"):
        console.print(f"  kept {path}", highlight=False)
        return
    shutil.rmtree(path, ignore_errors=True)
