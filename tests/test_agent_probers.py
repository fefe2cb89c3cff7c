"""Probers against real targets on loopback: a down target is a result with a reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from agent_helpers import PEER_PORTS, REPO, Server, self_signed_context, target_app  # first: repo on sys.path
from aiohttp import ClientSession, web

from protocol.checks import parse_checks
from agent.probers import PROBERS, http, icmp


def http_check(url: str, **fields):
    return parse_checks([{"name": "t", "type": "http", "url": url, "interval": "10s", "timeout": "2s", **fields}])[0]


def icmp_check(host: str, **fields):
    fields = {"count": 2, "ping_interval": "50ms", "timeout": "500ms", **fields}
    return parse_checks([{"name": "p", "type": "icmp", "host": host, "interval": "10s", **fields}])[0]


@pytest.fixture
async def target():
    server = await Server(target_app()).start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    return self_signed_context(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_target(tls_context):
    server = await Server(target_app(), tls_context).start()
    yield server
    await server.stop()


def test_the_table_maps_each_type_to_its_prober():
    from agent.probers import HTTP_CLIENTS, dns, http_lean, journey, tcp

    assert PROBERS == {"http": http_lean.probe, "icmp": icmp.probe, "tcp": tcp.probe, "dns": dns.probe,
                       "journey": journey.probe}
    assert HTTP_CLIENTS == {"lean": http_lean.probe, "aiohttp": http.probe}  # agent.http_client


async def test_http_200_is_ok_with_latency_and_status(target):
    result = await http.probe(http_check(f"{target.url}/ok", body_match=r"status: ok$"))
    assert (result.ok, result.error, result.status_code) == (True, None, 200)
    assert 0 < result.latency_ms < 2000


async def test_http_503_fails_with_status(target):
    result = await http.probe(http_check(f"{target.url}/fail"))
    assert (result.ok, result.error, result.status_code) == (False, "status", 503)
    assert result.detail == "status 503 not in 2xx"
    assert result.latency_ms is not None


async def test_http_expected_status_list_is_what_counts(target):
    accepted = await http.probe(http_check(f"{target.url}/fail", expected_status=[503]))
    refused = await http.probe(http_check(f"{target.url}/ok", expected_status=[204]))
    assert (accepted.ok, refused.ok, refused.error) == (True, False, "status")
    assert refused.detail == "status 200 not in [204]"


async def test_http_slow_target_fails_with_timeout(target):
    result = await http.probe(http_check(f"{target.url}/slow?s=3", timeout="300ms"))
    assert (result.ok, result.error) == (False, "timeout")
    assert result.detail == "no complete response within 300ms"


async def test_http_wrong_body_fails_with_body(target):
    result = await http.probe(http_check(f"{target.url}/wrong", body_match=r"status: ok"))
    assert (result.ok, result.error, result.status_code) == (False, "body", 200)
    assert "does not match 'status: ok'" in result.detail


async def test_http_refused_port_fails_with_connect(target):
    port = target.port
    await target.stop()  # nothing listens there any more
    result = await http.probe(http_check(f"http://127.0.0.1:{port}/ok"))
    assert (result.ok, result.error, result.status_code, result.latency_ms) == (False, "connect", None, None)


async def test_http_unresolvable_name_fails_with_dns():
    result = await http.probe(http_check("http://nonexistent.invalid/health"))
    assert (result.ok, result.error) == (False, "dns")
    assert "nonexistent.invalid" in result.detail


async def test_http_self_signed_certificate_fails_with_tls(tls_target):
    result = await http.probe(http_check(f"{tls_target.url}/ok"))
    assert (result.ok, result.error) == (False, "tls")
    assert "certificate" in result.detail.lower()


async def test_http_self_signed_certificate_passes_without_verification(tls_target):
    result = await http.probe(http_check(f"{tls_target.url}/ok", tls_verify=False))
    assert (result.ok, result.status_code) == (True, 200)


async def test_http_each_probe_opens_a_fresh_connection(target):
    # Control first: a pooled client reuses its connection, so the target sees one source port.
    async with ClientSession() as session:
        for _ in range(2):
            async with session.get(f"{target.url}/peer") as response:
                await response.read()
    assert len(set(target.app[PEER_PORTS])) == 1
    target.app[PEER_PORTS].clear()
    for _ in range(3):
        assert (await http.probe(http_check(f"{target.url}/peer"))).ok
    assert len(set(target.app[PEER_PORTS])) == 3


async def test_http_sends_method_and_headers(target):
    seen = {}

    async def echo(request):
        seen.update(method=request.method, token=request.headers.get("X-Token"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    server = await Server(app).start()
    try:
        result = await http.probe(http_check(f"{server.url}/echo", method="post", headers={"X-Token": "abc"}))
    finally:
        await server.stop()
    assert result.ok
    assert seen == {"method": "POST", "token": "abc"}


async def test_icmp_loopback_answers():
    result = await icmp.probe(icmp_check("127.0.0.1", count=3))
    assert (result.ok, result.error) == (True, None)
    assert result.detail.startswith("3/3 replies from 127.0.0.1")
    assert 0 <= result.latency_ms < 500


async def test_icmp_unresolvable_name_fails_with_dns():
    result = await icmp.probe(icmp_check("nonexistent.invalid"))
    assert (result.ok, result.error) == (False, "dns")


def test_icmp_without_any_socket_permission_says_how_to_fix_it():
    """As `nobody`, with unprivileged ICMP off (ping_group_range "1 0"), neither socket opens."""
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = map(int, f.read().split())
    if os.geteuid() != 0 or low <= 65534 <= high:
        pytest.skip("needs root to drop to nobody, and nobody outside ping_group_range")
    script = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]);"
        "from protocol.checks import parse_checks; from agent.probers import icmp;"
        "c = parse_checks([{'name': 'p', 'type': 'icmp', 'host': '127.0.0.1', 'interval': '10s', 'timeout': '200ms'}])[0];"
        "r = asyncio.run(icmp.probe(c));"
        "print(json.dumps({'result': r.to_dict(), 'mode': icmp.socket_mode(), 'problem': icmp.permission_problem()}))"
    )
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", script, str(REPO)],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["mode"] is None
    assert seen["result"]["error"] == "permission" and seen["result"]["ok"] is False
    detail = seen["result"]["detail"]
    assert "setcap cap_net_raw+ep" in detail and 'net.ipv4.ping_group_range="0 2147483647"' in detail
    assert seen["problem"] == detail


def test_icmp_as_root_uses_privileged_sockets():
    if os.geteuid() != 0:
        pytest.skip("runs as root in CI")
    assert icmp.socket_mode() == "privileged"
    assert icmp.permission_problem() is None
