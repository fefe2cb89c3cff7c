"""Programs run inside the lab's namespaces: the HTTP target, the recording proxy, the delay daemon.

Each is started by path, `python tests/netlab/programs.py COMMAND ...` (`command()` builds that
argv; `Fleet` and `Lab.impair` start them through `Host.popen`):

  * `target`: the HTTP target (GET / -> 200 "ok");
  * `proxy`: a recording reverse proxy in front of the collector: it forwards every request
    unchanged and appends, for each POST /api/v1/results, the result ids and the collector's
    status to a JSON Lines file, flushed before the answer goes back. That file is the
    outside observer of what agents sent and what the collector acknowledged;
  * `delay`: the NFQUEUE latency daemon, the stand-in for tc netem's delay where the kernel has
    no netem (see netlab/lab.py).

This module imports nothing but the standard library (and aiohttp, inside the programs that
use it), so running it by path, with only its own folder on sys.path, needs no path set-up.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

PATH = Path(__file__).resolve()


def command(name: str, *args: str) -> list[str]:
    """The argv that runs program `name` of this module in a new interpreter, by path."""
    return [sys.executable, str(PATH), name, *args]


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
