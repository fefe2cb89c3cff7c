"""Agent ICMP: hosts pinged per second over ten thousand loopback addresses (127.0.0.0/8 all
answer on Linux), side by side with blackbox_exporter's ICMP prober at the same concurrency, and
with `fping -i 0` (a C program's ceiling on this machine).

    .venv/bin/python bench/icmp.py [--hosts 10000] [--concurrency 100,1000]

Every prober runs pinned to core 0; the orchestration (and the exporter's HTTP driver) on core 1.
One echo request per host (count 1), 1 s timeout, no retries.

Rows:
  fping -i 0                  `fping -i 0 -r 0 -t 1000 -q -a -f HOSTS`; all hosts, as fast as it sends.
  agent prober                agent.probers.icmp.probe as the agent runs it (one shared socket per
                              address family, agent/probers/echo.py), one call per host, CONCURRENCY
                              in flight (asyncio.Semaphore).
  blackbox_exporter           GET /probe?module=icmp&target=HOST, CONCURRENCY requests in flight.
  prototype (one socket)      icmplib's socket API (ICMPv4Socket.send / receive) on ONE raw socket for
                              all hosts, CONCURRENCY echo requests outstanding, replies matched by
                              (address, sequence): the prototype the agent's shared socket came from.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PROBE_CPU = "0"
TIMEOUT = 1.0


def host_list(count: int) -> list[str]:
    """`count` distinct loopback addresses, 127.20.0.1 upwards (250 per /24)."""
    if count > 250 * 250:
        raise SystemExit("at most 62,500 hosts")
    return [f"127.20.{i // 250}.{i % 250 + 1}" for i in range(count)]


# --- workers (run pinned to the probe core, print one JSON line) -----------------------------


async def worker_agent(hosts: list[str], concurrency: int) -> dict:
    from protocol.checks import parse_checks
    from agent.probers import icmp

    checks = parse_checks([
        {"name": f"ping{i}", "type": "icmp", "interval": "10s", "host": h, "count": 1, "timeout": f"{TIMEOUT}s"}
        for i, h in enumerate(hosts)
    ])
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    errors: dict[str, int] = {}

    async def one(check) -> None:
        nonlocal ok
        async with sem:
            result = await icmp.probe(check)
        if result.ok:
            ok += 1
        else:
            errors[result.error] = errors.get(result.error, 0) + 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(c) for c in checks))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "ok": ok, "errors": errors,
            "mode": icmp.socket_mode()}


async def worker_prototype(hosts: list[str], concurrency: int) -> dict:
    """One icmplib socket for every host; `concurrency` requests outstanding; 1 s timeout each."""
    from icmplib import ICMPRequest, ICMPv4Socket
    from icmplib.exceptions import ICMPLibError, SocketPermissionError

    try:
        sock = ICMPv4Socket(privileged=True)
        mode = "privileged"
    except SocketPermissionError:
        sock = ICMPv4Socket(privileged=False)
        mode = "unprivileged"
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    pending: dict[tuple[str, int], tuple[float, str]] = {}  # (address, sequence) -> (sent, host)
    rtts: list[float] = []
    lost = 0
    next_index = 0
    finished = loop.create_future()

    def send_more() -> None:
        nonlocal next_index
        while len(pending) < concurrency and next_index < len(hosts):
            host = hosts[next_index]
            seq = next_index & 0xFFFF
            request = ICMPRequest(host, id=ident, sequence=seq)
            sock.send(request)
            pending[(host, seq)] = (time.perf_counter(), host)
            next_index += 1
        if not pending and next_index >= len(hosts) and not finished.done():
            finished.set_result(None)

    def readable() -> None:
        # One datagram per callback (the reader fires again while more are queued). A raw socket
        # on loopback also sees our own echo requests: only echo replies (type 0) with our id count.
        try:
            reply = sock.receive(None, timeout=TIMEOUT)
        except ICMPLibError:
            return
        if reply.type != 0 or reply.id != ident and mode == "privileged":
            return
        sent = pending.pop((reply.source, reply.sequence), None)
        if sent is not None:
            rtts.append(time.perf_counter() - sent[0])
            send_more()

    async def expire() -> None:
        nonlocal lost
        while not finished.done():
            await asyncio.sleep(0.05)
            cutoff = time.perf_counter() - TIMEOUT
            stale = [key for key, (sent, _) in pending.items() if sent < cutoff]
            for key in stale:
                del pending[key]
            lost += len(stale)
            if stale:
                send_more()

    # icmplib's socket object wraps a Python socket; the prototype reaches it for two things icmplib
    # does not offer: a larger receive buffer (1,000 replies in flight overflow the default 208 KiB,
    # the more so as a raw socket on loopback also queues our own echo requests) and the descriptor
    # to be told when a reply is readable.
    import socket as _socket

    raw_sock = sock._sock
    try:
        raw_sock.setsockopt(_socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE (root)
    except OSError:
        raw_sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 8 * 1024 * 1024)
    fd = raw_sock.fileno()
    loop.add_reader(fd, readable)
    cpu0, t0 = time.process_time(), time.perf_counter()
    send_more()
    expirer = asyncio.ensure_future(expire())
    try:
        await asyncio.wait_for(finished, timeout=60)
    finally:
        wall = time.perf_counter() - t0
        expirer.cancel()
        loop.remove_reader(fd)
        sock.close()
    return {"wall": wall, "cpu": time.process_time() - cpu0, "ok": len(rtts), "lost": lost, "mode": mode}


def run_worker(kind: str, hosts_file: Path, concurrency: int) -> dict:
    out = subprocess.run(
        B.taskset(PROBE_CPU, [sys.executable, __file__, "--worker", kind, "--hosts-file", str(hosts_file),
                              "--concurrency", str(concurrency)]),
        capture_output=True, text=True, timeout=180,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- peers -----------------------------------------------------------------------------------


def run_fping(hosts_file: Path, count: int) -> dict:
    import shutil

    exe = shutil.which("fping")
    if not exe:
        raise SystemExit("fping is needed: apt-get install fping")
    t0 = time.perf_counter()
    out = subprocess.run(B.taskset(PROBE_CPU, [exe, "-i", "0", "-r", "0", "-t", str(int(TIMEOUT * 1000)), "-q", "-a",
                                               "-f", str(hosts_file)]),
                         capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    alive = len([line for line in out.stdout.splitlines() if line.strip()])
    return {"wall": wall, "ok": alive}


def run_blackbox(procs: B.Procs, work: Path, hosts: list[str], concurrency: int, port: int, pid: int) -> dict:
    cpu0 = B.cpu_seconds(pid)
    res = asyncio.run(B.drive_probe_endpoint(port, hosts, "icmp", concurrency=concurrency, count=len(hosts)))
    return {"wall": res.wall, "cpu": B.cpu_seconds(pid) - cpu0, "ok": res.ok,
            "p99_ms": B.percentile(res.latencies, 99) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--concurrency", default="100,1000", help="comma-separated list (default 100,1000)")
    ap.add_argument("--worker", choices=["agent", "prototype"], help=argparse.SUPPRESS)
    ap.add_argument("--hosts-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        hosts = Path(args.hosts_file).read_text().split()
        fn = worker_agent if args.worker == "agent" else worker_prototype
        print(json.dumps(asyncio.run(fn(hosts, int(args.concurrency)))))
        return

    B.header("agent ICMP: hosts pinged per second over loopback addresses")
    B.pin_self({1})
    hosts = host_list(args.hosts)
    work = B.workdir("icmp")
    hosts_file = work / "hosts.txt"
    hosts_file.write_text("\n".join(hosts) + "\n")
    levels = [int(c) for c in args.concurrency.split(",")]
    rows, raw = [], {"hosts": len(hosts), "timeout_s": TIMEOUT, "runs": []}
    started = time.monotonic()

    fp = run_fping(hosts_file, len(hosts))
    fping_rate = len(hosts) / fp["wall"]
    raw["runs"].append({"tool": "fping -i 0", **fp, "rate": fping_rate})

    with B.Procs(work) as procs:
        bb_proc, bb_port = B.start_blackbox(procs, work, cpus=PROBE_CPU)
        # warm the exporter (first requests set up its HTTP server's goroutines)
        asyncio.run(B.drive_probe_endpoint(bb_port, hosts[:200], "icmp", concurrency=50, count=200))
        for c in levels:
            agent = run_worker("agent", hosts_file, c)
            proto = run_worker("prototype", hosts_file, c)
            bb = run_blackbox(procs, work, hosts, c, bb_port, bb_proc.pid)
            for tool, r in (("agent prober (icmplib async_ping)", agent), ("blackbox_exporter " + B.blackbox_version().split()[0], bb),
                            ("prototype: one icmplib socket", proto)):
                rate = len(hosts) / r["wall"]
                r.update(tool=tool, concurrency=c, rate=rate)
                raw["runs"].append(r)
            a_rate, b_rate, p_rate = (len(hosts) / r["wall"] for r in (agent, bb, proto))
            rows += [
                ["agent prober (one shared socket per family)", c, agent["ok"], agent["wall"], a_rate,
                 agent["cpu"], f"{a_rate / b_rate:.2f}x", f"{a_rate / fping_rate:.3f}"],
                [f"blackbox_exporter {B.blackbox_version().split()[0]} (icmp module)", c, bb["ok"], bb["wall"], b_rate,
                 bb["cpu"], "1.00x", f"{b_rate / fping_rate:.3f}"],
                ["prototype: one icmplib socket for all hosts", c, proto["ok"], proto["wall"], p_rate, proto["cpu"],
                 f"{p_rate / b_rate:.2f}x", f"{p_rate / fping_rate:.3f}"],
            ]
    rows.insert(0, ["fping -i 0 -r 0 (C ceiling)", "all", fp["ok"], fp["wall"], fping_rate, None, "", "1.000"])
    B.print_table(
        f"ICMP: {len(hosts):,} loopback hosts, one echo each, 1 s timeout, prober pinned to core 0",
        ["prober", "concurrency", "answered", "wall s", "hosts/s", "CPU s", "vs exporter", "ratio to fping"],
        rows,
        notes=[
            "goal: agent >= 3x blackbox_exporter at the same concurrency; report the ratio to fping.",
            f"socket mode of the agent: {raw['runs'][1].get('mode')}; runtime {time.monotonic() - started:.0f} s.",
        ],
    )
    raw["elapsed_s"] = time.monotonic() - started
    B.save_json("icmp", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
