"""ICMP echo through one socket per address family for every probe of an agent.

icmplib's `async_ping` opens a socket per ping: at thousands of ICMP checks a minute the agent
spends its time opening, polling and closing sockets (bench/icmp.py: 5,300 hosts/s that way,
23,000 through one socket). Here one socket per family stays open, the event loop tells us when
replies are readable, and each reply is matched to its request by address and sequence number
(and, on a raw socket, which sees every process's replies, by our identifier). icmplib still
resolves names; the packets are simple enough to build and parse here (RFC 792, RFC 4443).

Raw sockets are tried first; without CAP_NET_RAW the kernel's unprivileged ping sockets
(net.ipv4.ping_group_range), where the kernel sets the identifier and delivers only our replies.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
PROTOCOL = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
PAYLOAD = b"uptime-agent-echo" + bytes(39)  # 56 bytes, as ping(8) sends
# Replies of thousands of probes in flight overflow the default receive buffer (about 208 KiB),
# the more so on a raw socket that also queues every other ICMP packet of the host.
RECEIVE_BUFFER = 8 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class EchoPermissionError(OSError):
    """Neither a raw nor an unprivileged ICMP socket can be opened for this family."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ICMPv4 messages; the kernel computes ICMPv6's."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, identifier: int, sequence: int) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, identifier, sequence)
    if family == socket.AF_INET6:
        return header + PAYLOAD
    return struct.pack("!BBHHH", ECHO_REQUEST[family], 0, checksum(header + PAYLOAD), identifier, sequence) + PAYLOAD


def parse_reply(family: int, raw: bool, packet: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply, None for any other packet. A raw ICMPv4 socket
    delivers the IP header too; ICMPv6 and ping sockets deliver the ICMP message alone."""
    offset = (packet[0] & 0x0F) * 4 if family == socket.AF_INET and raw and packet else 0
    if len(packet) < offset + 8:
        return None
    kind, _code, _sum, identifier, sequence = struct.unpack_from("!BBHHH", packet, offset)
    if kind != ECHO_REPLY[family]:
        return None  # our own requests (a raw socket on loopback sees them), errors, others
    return identifier, sequence


@dataclass
class _FamilySocket:
    family: int
    sock: socket.socket
    raw: bool
    identifier: int
    pending: dict[tuple[str, int], asyncio.Future] = field(default_factory=dict)
    sequences: "itertools.count[int]" = field(default_factory=lambda: itertools.count(int.from_bytes(os.urandom(2), "big")))

    def next_sequence(self, address: str) -> int:
        for _ in range(0x10000):
            sequence = next(self.sequences) & 0xFFFF
            if (address, sequence) not in self.pending:
                return sequence
        raise OSError("all 65,536 ICMP sequence numbers to this address are in flight")


class EchoSockets:
    """The agent's ICMP sockets on one event loop, opened at first use, one per family."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._sockets: dict[int, _FamilySocket] = {}

    def _socket(self, family: int) -> _FamilySocket:
        found = self._sockets.get(family)
        if found is not None:
            return found
        for raw in (True, False):
            try:
                sock = socket.socket(family, socket.SOCK_RAW if raw else socket.SOCK_DGRAM, PROTOCOL[family])
                break
            except PermissionError:
                continue
        else:
            raise EchoPermissionError("no ICMP socket may be opened")
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:  # not root: as large as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        # on a ping socket the kernel replaces the identifier with the socket's own
        entry = _FamilySocket(family, sock, raw, os.getpid() & 0xFFFF if raw else 0)
        self.loop.add_reader(sock.fileno(), self._readable, entry)
        self._sockets[family] = entry
        return entry

    def _readable(self, entry: _FamilySocket) -> None:
        now = time.perf_counter()
        while True:  # drain what is queued: one wake-up for many replies
            try:
                packet, source = entry.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket: the requests time out on their own
            parsed = parse_reply(entry.family, entry.raw, packet)
            if parsed is None:
                continue
            identifier, sequence = parsed
            if entry.raw and identifier != entry.identifier:
                continue  # another process's ping
            future = entry.pending.pop((source[0], sequence), None)
            if future is not None and not future.done():
                future.set_result(now)

    async def echo(self, address: str, timeout: float) -> float | None:
        """One echo request to `address` (an IP address); the round trip in seconds, or None
        when no reply came within `timeout`."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        entry = self._socket(family)
        sequence = entry.next_sequence(address)
        future = self.loop.create_future()
        key = (address, sequence)
        entry.pending[key] = future
        try:
            sent = time.perf_counter()
            target = (address, 0, 0, 0) if family == socket.AF_INET6 else (address, 0)
            entry.sock.sendto(echo_request(family, entry.identifier, sequence), target)
            try:
                received = await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                return None
            return received - sent
        finally:
            entry.pending.pop(key, None)

    def close(self) -> None:
        for entry in self._sockets.values():
            self.loop.remove_reader(entry.sock.fileno())
            entry.sock.close()
            for future in entry.pending.values():
                future.cancel()
        self._sockets.clear()


_BY_LOOP: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EchoSockets]" = weakref.WeakKeyDictionary()


def sockets() -> EchoSockets:
    """The running loop's shared ICMP sockets."""
    loop = asyncio.get_running_loop()
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = EchoSockets(loop)
    return found
