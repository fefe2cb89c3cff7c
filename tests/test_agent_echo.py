"""ICMP probes share one socket per address family: many probes in flight, each reply matched to
its request by address and sequence; raw sockets as root, the kernel's ping sockets without."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest
from agent_helpers import REPO

from agent.probers import echo, icmp
from protocol.checks import parse_checks


def icmp_check(host: str, **fields):
    fields = {"count": 2, "ping_interval": "20ms", "timeout": "500ms", **fields}
    return parse_checks([{"name": f"p-{host}", "type": "icmp", "host": host, "interval": "10s", **fields}])[0]


def test_echo_request_checksum_verifies_and_replies_are_told_apart():
    packet = echo.echo_request(socket.AF_INET, 0x1234, 7)
    assert echo.checksum(packet) == 0  # a message with its checksum in place sums to zero (RFC 1071)
    reply = bytes([0]) + packet[1:]
    assert echo.parse_reply(socket.AF_INET, False, reply) == (0x1234, 7)
    assert echo.parse_reply(socket.AF_INET, False, packet) is None  # our own request, not a reply
    ip_header = bytes([0x45]) + bytes(19)
    assert echo.parse_reply(socket.AF_INET, True, ip_header + reply) == (0x1234, 7)
    unreachable = struct.pack("!BBHHH", 3, 1, 0, 0, 0)
    assert echo.parse_reply(socket.AF_INET, False, unreachable) is None
    assert echo.parse_reply(socket.AF_INET6, False, struct.pack("!BBHHH", 129, 0, 0, 9, 65535)) == (9, 65535)
    assert echo.parse_reply(socket.AF_INET, True, b"\x45") is None  # truncated


async def test_many_probes_in_flight_share_one_socket_per_family():
    if os.geteuid() != 0:
        pytest.skip("runs as root in CI")
    hosts = [f"127.0.{i // 200}.{1 + i % 200}" for i in range(300)] + ["::1"] * 5
    results = await asyncio.gather(*(icmp.probe(icmp_check(h)) for h in hosts))
    assert [r.error for r in results] == [None] * len(hosts)
    assert all(r.detail.startswith("2/2 replies from ") for r in results)
    assert [r.detail.split()[3].rstrip(",") for r in results] == hosts  # each reply went to its own probe
    shared = echo.sockets()
    assert sorted(shared._sockets) == sorted([socket.AF_INET, socket.AF_INET6])
    assert all(entry.raw for entry in shared._sockets.values())
    assert not any(entry.pending for entry in shared._sockets.values())  # nothing left waiting


async def test_an_unanswered_echo_is_a_failure_within_its_timeout():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2")
    # a link-local address nobody holds: requests leave and nothing answers
    result = await icmp.probe(icmp_check("169.254.250.250", count=1, timeout="200ms"))
    assert (result.ok, result.error) == (False, "icmp")
    assert result.detail.startswith("0/1 replies")


def test_without_raw_sockets_the_kernels_ping_sockets_are_used():
    """As `nobody` in a network namespace of its own whose ping_group_range admits every group."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and iproute2")
    script = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from protocol.checks import parse_checks
from agent.probers import echo, icmp
checks = parse_checks([{"name": f"p{i}", "type": "icmp", "host": h, "interval": "10s", "count": 2,
                        "ping_interval": "20ms", "timeout": "500ms"}
                       for i, h in enumerate(["127.0.0.1", "127.0.0.2", "::1"])])
async def main():
    results = await asyncio.gather(*(icmp.probe(c) for c in checks))
    return [r.to_dict() for r in results], [e.raw for e in echo.sockets()._sockets.values()]
results, raw = asyncio.run(main())
print(json.dumps({"results": results, "raw": raw}))
"""
    shell = ('ip link set lo up && sysctl -qw net.ipv4.ping_group_range="0 2147483647" && '
             'exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$0" -c "$1" "$2"')
    proc = subprocess.run(["unshare", "--net", "sh", "-c", shell, sys.executable, script, str(REPO)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["raw"] == [False, False]  # ping sockets, one per family
    assert [(r["ok"], r["detail"].split(",")[0]) for r in seen["results"]] == [
        (True, "2/2 replies from 127.0.0.1"), (True, "2/2 replies from 127.0.0.2"), (True, "2/2 replies from ::1")]
