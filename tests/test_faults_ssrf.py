"""The agent's SSRF guard (`guard: {block_private: true}`), against real loopback servers.

Every server here listens on a loopback address (127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8
is loopback on Linux), so the tests exempt one of them with `guard.allow` to have an "allowed"
host, and use a resolver of their own to make names resolve where a test needs them to (a
redirect to a name, DNS rebinding). Each test that expects a refusal also asserts that the
refused server saw no connection at all: the guard refuses before connect(), not after.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from agent_helpers import agent_config, wait_until  # first: puts the repo on sys.path

from netlab.lab import isolated_host, require_lab

from agent.config import ConfigError, HttpCheck, parse_config
from agent.probers import ERRORS, RESULTS_BY_TYPE, http
from agent.probers.guard import AddressGuard, legacy_ipv4, why_blocked
from agent.runner import Agent


# --- the address rules ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("127.3.4.5", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "shared address space"),  # carrier-grade NAT
        ("100.127.255.254", "shared address space"),
        ("192.0.2.1", "private"),  # documentation range (TEST-NET-1)
        ("fec0::1", "site-local"),
        ("feff:ffff::1", "site-local"),
        ("::ffff:0:0", "unspecified (embedded 0.0.0.0)"),
        ("64:ff9b::7f00:1", "loopback (embedded 127.0.0.1)"),
        ("2002:7f00:1::1", "loopback (embedded 127.0.0.1)"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "cloud metadata (embedded 169.254.169.254)"),
        ("::ffff:127.0.0.1", "loopback (embedded 127.0.0.1)"),
        ("::ffff:169.254.169.254", "cloud metadata (embedded 169.254.169.254)"),
        ("2002:a00:1::1", "private (embedded 10.0.0.1)"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata (embedded 169.254.169.254)"),  # NAT64
        ("not-an-address", "not an IP address"),
    ],
)
def test_blocked_addresses_name_their_reason(address: str, reason: str) -> None:
    assert why_blocked(address) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert why_blocked(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0", "0.1.2.3", "0.255.255.255",  # 0.0.0.0/8
        "100.64.0.0", "100.100.0.1", "100.127.255.255",  # 100.64.0.0/10
        "192.0.0.1", "192.0.0.9", "192.0.0.10", "192.0.0.170", "192.0.0.255",  # all of 192.0.0.0/24
        "198.18.0.1", "198.19.255.255",  # benchmarking
        "240.0.0.1", "254.255.255.255", "255.255.255.255",
        "224.0.0.1", "239.255.255.255",
        "::", "::1", "fe80::1", "febf:ffff::1", "fec0::1", "fc00::1", "fdff::1", "ff0e::1",
        "::ffff:10.0.0.1", "::ffff:100.64.0.1", "::ffff:192.0.0.9", "::ffff:198.18.0.1",
        "64:ff9b::10.0.0.1", "64:ff9b::100.64.0.1", "64:ff9b::192.0.0.9", "64:ff9b::240.0.0.1",
        "64:ff9b:1:7f00:1::", "64:ff9b:1::7f00:1",  # local-use NAT64: outside its /96 always refused
        "2002:c000:9::1", "2002:6440:1::1", "2002:c612:1::1",  # 6to4 of 192.0.0.9, 100.64.0.1, 198.18.0.1
        "2001:db8::1", "3fff::1", "2001::1", "100::1",
        "169.254.169.254", "fd00:ec2::254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::",
    ],
)
def test_special_purpose_ranges_are_blocked(address: str) -> None:
    assert why_blocked(address) is not None, address


def test_metadata_is_refused_however_the_address_object_is_scoped() -> None:
    assert why_blocked(ipaddress.IPv6Address("fd00:ec2::254%3")) == "cloud metadata"
    assert why_blocked("fe80::1%25eth0") == "link-local"
    assert why_blocked("64:ff9b:1::808:808") is None  # local-use NAT64 /96 of a public address


@pytest.mark.parametrize(
    "host, address",
    [("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
     ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("134744072", "8.8.8.8"),
     ("127.0.0.1", None), ("example.com", None), ("::1", None), ("deadbeef", None), ("", None)],
)
def test_legacy_numeric_hosts_are_read_as_inet_aton_reads_them(host: str, address: str | None) -> None:
    assert legacy_ipv4(host) == (ipaddress.IPv4Address(address) if address else None)


def test_allow_exempts_networks_but_never_metadata() -> None:
    guard = AddressGuard((ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("169.254.0.0/16")))
    assert guard.why_blocked("127.0.0.2") is None
    assert guard.why_blocked("127.0.0.3") == "loopback"
    assert guard.why_blocked("169.254.1.1") is None
    assert guard.why_blocked("169.254.169.254") == "cloud metadata"
    assert guard.why_blocked("::ffff:127.0.0.2") is None


def test_blocked_is_a_known_reason_of_http_results() -> None:
    assert "blocked" in ERRORS
    assert "blocked" in RESULTS_BY_TYPE["http"]


def test_guard_config_is_validated() -> None:
    base = {"agent": {"id": "a1"}, "collector": {"url": "http://127.0.0.1:1", "token": "t"}}
    default = parse_config(base).guard
    assert default.block_private is None  # unset: on for assigned checks only
    assert (default.applies(assigned=True), default.applies(assigned=False)) == (True, False)
    off = parse_config({**base, "guard": {"block_private": False}}).guard
    assert (off.applies(assigned=True), off.applies(assigned=False)) == (False, False)
    config = parse_config({**base, "guard": {"block_private": True, "allow": ["203.0.113.0/24", "2001:db8::1"]}})
    assert config.guard.block_private is True
    assert [str(n) for n in config.guard.networks()] == ["203.0.113.0/24", "2001:db8::1/128"]
    assert config.guard.applies(assigned=False) is True  # true: local checks too
    assert parse_config({**base, "guard": None}).guard.block_private is None  # all keys commented out
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "guard": {"block_private": True, "allow": ["10.0.0.0/33"]}})
    assert str(err.value) == "guard.allow.0: invalid network '10.0.0.0/33': use an address or CIDR, e.g. 10.1.2.0/24"
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "guard": {"block_privates": True}})
    assert str(err.value) == "guard.block_privates: unknown key"
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "guard": {"block_private": "sometimes"}})
    assert str(err.value).startswith("guard.block_private: ")


# --- real servers -----------------------------------------------------------------------------

class CountingServer:
    """An HTTP server on one loopback address that counts the TCP connections it accepted.

    `redirect_to` makes `/` answer 302 with that Location; otherwise `/` answers 200 "ok"."""

    def __init__(self, host: str, port: int = 0, redirect_to: str | None = None):
        self.host = host
        self.port = port
        self.redirect_to = redirect_to
        self.connections = 0
        self.requests = 0
        self._server: asyncio.base_events.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> CountingServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        protocol_factory = self._runner.server

        def counted():
            self.connections += 1
            return protocol_factory()

        self._server = await asyncio.get_running_loop().create_server(counted, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.redirect_to and request.path == "/":
            raise web.HTTPFound(self.redirect_to)
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()


def shared_free_port(*hosts: str) -> int:
    """A port free on every one of `hosts` (so that one name can point to any of them)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for host in hosts:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise AssertionError("no port free on all of " + ", ".join(hosts))


class MappedResolver(AbstractResolver):
    """Resolves names from a table; a list of answers per name is used one lookup at a time
    (the last one repeats), which is how a rebinding DNS server behaves."""

    def __init__(self, table: dict[str, list[list[str]]]):
        self.table = table
        self.lookups: list[tuple[str, list[str]]] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        answers = self.table.get(host)
        if not answers:
            raise OSError(socket.EAI_NONAME, f"{host}: not in the test's table")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        self.lookups.append((host, list(addresses)))
        return [
            {"hostname": host, "host": a, "port": port,
             "family": socket.AF_INET6 if ":" in a else socket.AF_INET, "proto": 0,
             "flags": socket.AI_NUMERICHOST}
            for a in addresses
        ]

    async def close(self) -> None:
        pass


def check(url: str, timeout: str = "2s") -> HttpCheck:
    return HttpCheck.model_validate({"name": "web", "type": "http", "interval": "10s", "timeout": timeout, "url": url})


ON = AddressGuard()
ALLOW_2 = AddressGuard((ipaddress.ip_network("127.0.0.2/32"),))


async def test_guard_on_blocks_a_loopback_target_before_connecting_and_off_it_works() -> None:
    server = await CountingServer("127.0.0.1").start()
    try:
        url = f"http://127.0.0.1:{server.port}/"
        started = time.monotonic()
        blocked = await http.probe(check(url), guard=ON)
        assert time.monotonic() - started < 1.0
        assert (blocked.ok, blocked.error, blocked.status_code) == (False, "blocked", None)
        assert blocked.detail == f"127.0.0.1:{server.port} blocked by the agent's guard: 127.0.0.1 (loopback)"
        assert (server.connections, server.requests) == (0, 0)

        allowed = await http.probe(check(url), guard=None)
        assert (allowed.ok, allowed.error, allowed.status_code) == (True, None, 200)
        assert (server.connections, server.requests) == (1, 1)
    finally:
        await server.stop()


async def test_a_name_is_judged_by_the_address_it_resolves_to() -> None:
    """`localhost` through the system resolver, and a public-looking name mapped to loopback."""
    server = await CountingServer("127.0.0.1").start()
    try:
        result = await http.probe(check(f"http://localhost:{server.port}/"), guard=ON)
        assert (result.ok, result.error) == (False, "blocked")
        assert "127.0.0.1 (loopback)" in result.detail
        resolver = MappedResolver({"www.example.com": [["127.0.0.1"]]})
        result = await http.probe(check(f"http://www.example.com:{server.port}/"), guard=ON, resolver=resolver)
        assert (result.ok, result.error) == (False, "blocked")
        assert result.detail == f"www.example.com:{server.port} blocked by the agent's guard: 127.0.0.1 (loopback)"
        assert server.connections == 0
        result = await http.probe(check(f"http://www.example.com:{server.port}/"), guard=None, resolver=resolver)
        assert result.ok and server.connections == 1
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "host, address, reason",
    [
        ("2130706433", "127.0.0.1", "loopback"),  # decimal
        ("0177.0.0.1", "127.0.0.1", "loopback"),  # octal
        ("0x7f000001", "127.0.0.1", "loopback"),  # hex
        ("0x7f.1", "127.0.0.1", "loopback"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1", "loopback (embedded 127.0.0.1)"),  # IPv4-mapped
        ("[64:ff9b::127.0.0.1]", "64:ff9b::7f00:1", "loopback (embedded 127.0.0.1)"),  # NAT64
    ],
)
async def test_disguised_loopback_hosts_are_blocked_before_reaching_the_server(host, address, reason) -> None:
    """A loopback server is the would-be target of each URL form; with the guard off the plain
    form reaches it, with the guard on every disguise is refused as `blocked` without a packet."""
    server = await CountingServer("127.0.0.1").start()
    try:
        url = f"http://{host}:{server.port}/"
        result = await http.probe(check(url), guard=ON)
        assert (result.ok, result.error, result.status_code) == (False, "blocked", None), (url, result)
        assert result.detail.endswith(f"blocked by the agent's guard: {address} ({reason})"), result.detail
        assert (server.connections, server.requests) == (0, 0)
        # the target is really there: the canonical form reaches it when the guard is off
        plain = await http.probe(check(f"http://127.0.0.1:{server.port}/"), guard=None)
        assert plain.ok and (server.connections, server.requests) == (1, 1)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "host, reason",
    [("[fe80::1%25eth0]", "link-local"), ("[fe80::1%25lo]", "link-local"), ("[fec0::1]", "site-local"),
     ("[fd00:ec2::254]", "cloud metadata")],
)
async def test_scoped_and_site_local_ipv6_literals_are_blocked_at_once(host, reason) -> None:
    """No loopback server can stand at these addresses; refused before any connect() (an attempt
    would fail or hang to the timeout instead), and a loopback server on the same port sees nothing."""
    server = await CountingServer("127.0.0.1").start()
    try:
        started = time.monotonic()
        result = await http.probe(check(f"http://{host}:{server.port}/", timeout="3s"), guard=ON)
        assert time.monotonic() - started < 1.0
        assert (result.ok, result.error) == (False, "blocked"), result
        assert result.detail.endswith(f"({reason})"), result.detail
        assert (server.connections, server.requests) == (0, 0)
    finally:
        await server.stop()


async def test_a_redirect_to_a_decimal_loopback_host_is_blocked() -> None:
    inner = await CountingServer("127.0.0.1").start()
    outer = await CountingServer("127.0.0.2", redirect_to=f"http://2130706433:{inner.port}/secret").start()
    try:
        result = await http.probe(check(f"http://127.0.0.2:{outer.port}/"), guard=ALLOW_2)
        assert (result.ok, result.error) == (False, "blocked")
        assert result.detail == (
            f"2130706433:{inner.port} (redirect 1) blocked by the agent's guard: 127.0.0.1 (loopback)")
        assert (outer.requests, inner.connections) == (1, 0)
    finally:
        await outer.stop()
        await inner.stop()


async def test_metadata_and_ipv6_literals_are_blocked_without_a_packet() -> None:
    """Run in a namespace of its own with only loopback: had the guard let one through, the
    connection would fail there instead of reaching a real metadata service or private host."""
    require_lab()
    with isolated_host("ssrf") as host:
        await host.run_async(_literals_are_blocked)


async def _literals_are_blocked() -> None:
    for url, detail in [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80 blocked by the agent's guard: 169.254.169.254 (cloud metadata)"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "[fd00:ec2::254]:80 blocked by the agent's guard: fd00:ec2::254 (cloud metadata)"),
        ("http://[::1]:9/", "[::1]:9 blocked by the agent's guard: ::1 (loopback)"),
        ("http://10.255.255.1:9/", "10.255.255.1:9 blocked by the agent's guard: 10.255.255.1 (private)"),
    ]:
        started = time.monotonic()
        result = await http.probe(check(url, timeout="3s"), guard=ON)
        # refused at once: a connect attempt to these unroutable addresses would hang to the timeout
        assert time.monotonic() - started < 1.0, url
        assert (result.ok, result.error, result.detail) == (False, "blocked", detail), url


async def test_each_redirect_hop_is_judged_again() -> None:
    """127.0.0.2 is allowed; it redirects to 127.0.0.3, which is not: the second hop is refused
    and 127.0.0.3 never sees a connection. With the guard off the redirect is followed."""
    inner = await CountingServer("127.0.0.3").start()
    outer = await CountingServer("127.0.0.2", redirect_to=f"http://127.0.0.3:{inner.port}/secret").start()
    try:
        url = f"http://127.0.0.2:{outer.port}/"
        result = await http.probe(check(url), guard=ALLOW_2)
        assert (result.ok, result.error) == (False, "blocked")
        assert result.detail == (
            f"127.0.0.3:{inner.port} (redirect 1) blocked by the agent's guard: 127.0.0.3 (loopback)")
        assert (outer.connections, outer.requests) == (1, 1)
        assert (inner.connections, inner.requests) == (0, 0)

        result = await http.probe(check(url), guard=None)
        assert (result.ok, result.status_code) == (True, 200)
        assert (inner.connections, inner.requests) == (1, 1)
    finally:
        await outer.stop()
        await inner.stop()


async def test_dns_rebinding_between_hops_is_refused_at_connect_time() -> None:
    """One name, two lookups: the first answers the allowed 127.0.0.2, the second (after a
    redirect to the same name) the forbidden 127.0.0.3. The address connected to is the one
    judged, so the second hop is refused and 127.0.0.3 gets no connection."""
    port = shared_free_port("127.0.0.2", "127.0.0.3")
    inner = await CountingServer("127.0.0.3", port).start()
    outer = await CountingServer("127.0.0.2", port, redirect_to=f"http://rebind.example:{port}/again").start()
    try:
        resolver = MappedResolver({"rebind.example": [["127.0.0.2"], ["127.0.0.3"]]})
        result = await http.probe(check(f"http://rebind.example:{port}/"), guard=ALLOW_2, resolver=resolver)
        assert resolver.lookups == [("rebind.example", ["127.0.0.2"]), ("rebind.example", ["127.0.0.3"])]
        assert (result.ok, result.error) == (False, "blocked")
        assert result.detail == (
            f"rebind.example:{port} (redirect 1) blocked by the agent's guard: 127.0.0.3 (loopback)")
        assert (outer.connections, inner.connections) == (1, 0)
    finally:
        await outer.stop()
        await inner.stop()


async def test_a_name_with_mixed_answers_connects_only_to_allowed_addresses() -> None:
    port = shared_free_port("127.0.0.2", "127.0.0.3")
    forbidden = await CountingServer("127.0.0.3", port).start()
    allowed = await CountingServer("127.0.0.2", port).start()
    try:
        resolver = MappedResolver({"mixed.example": [["127.0.0.3", "127.0.0.2"]]})
        result = await http.probe(check(f"http://mixed.example:{port}/"), guard=ALLOW_2, resolver=resolver)
        assert (result.ok, result.status_code) == (True, 200)
        assert (forbidden.connections, allowed.connections) == (0, 1)
    finally:
        await allowed.stop()
        await forbidden.stop()


async def test_a_refused_connection_to_an_allowed_address_stays_connect() -> None:
    port = shared_free_port("127.0.0.2")  # nothing listens there
    result = await http.probe(check(f"http://127.0.0.2:{port}/"), guard=ALLOW_2)
    assert (result.ok, result.error) == (False, "connect")


class RecordingCollector:
    """Just enough of the collector for an agent with local checks: stores what is POSTed.
    (agent_helpers.FakeCollector validates error reasons against a list without `blocked`.)"""

    def __init__(self):
        self.stored: dict[str, dict] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> RecordingCollector:
        app = web.Application()

        async def results(request: web.Request) -> web.Response:
            body = await request.json()
            for r in body["results"]:
                self.stored[r["id"]] = r
            return web.json_response({"accepted": len(body["results"]), "duplicates": 0})

        async def heartbeat(request: web.Request) -> web.Response:
            return web.json_response({"server_time": "2026-01-01T00:00:00Z"})

        app.router.add_post("/api/v1/results", results)
        app.router.add_post("/api/v1/heartbeat", heartbeat)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


async def test_the_agent_applies_its_config_guard_to_http_checks(tmp_path) -> None:
    """Through the whole agent: a local check against a loopback server is refused with
    `blocked` under `guard: {block_private: true}`, shipped like any result; ICMP is unaffected."""
    collector = await RecordingCollector().start()
    server = await CountingServer("127.0.0.1").start()
    seen: list[dict] = []
    checks = [
        {"name": "web", "type": "http", "interval": "1s", "timeout": "500ms", "url": f"http://127.0.0.1:{server.port}/"},
        {"name": "ping", "type": "icmp", "interval": "1s", "host": "127.0.0.1", "count": 1, "timeout": "300ms"},
    ]
    config = agent_config(tmp_path, collector.url, checks=checks, guard={"block_private": True})
    agent = Agent(config, on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: sum(r["check"] == "web" for r in seen) >= 2 and any(r["check"] == "ping" for r in seen),
                         timeout=6)
        await wait_until(lambda: len(collector.stored) >= 3, timeout=5)
    finally:
        await agent.stop()
        await server.stop()
        await collector.stop()
    web_results = [r for r in seen if r["check"] == "web"]
    assert all((r["ok"], r["error"]) == (False, "blocked") for r in web_results), web_results
    assert all(r["ok"] for r in seen if r["check"] == "ping")
    assert server.connections == 0
    assert any(r["error"] == "blocked" for r in collector.stored.values())
    body = agent.metrics.exposition().decode()
    assert f'uptime_agent_probes_total{{check="web",result="blocked",type="http"}} {float(len(web_results))}' in body
