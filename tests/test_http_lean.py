"""The lean HTTP prober (agent/probers/http_lean.py) against real loopback servers (aiohttp, TLS
with trustme certificates): the aiohttp prober's own test cases run again with the lean prober in
its place, both probers are compared result by result on one table of targets, and what only a
hand-made client must get right (HEAD, chunked and compressed bodies, the body limit, malformed
or cut-off responses) is pinned against raw TCP servers."""
from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from agent_helpers import Server, target_app  # first: repo on sys.path
from aiohttp import web
import probers_helpers
from probers_helpers import Certificates, TcpServer, banner

import test_agent_probers as probers_cases
import test_faults_ssrf as guard_cases
import test_probers_tls as tls_cases
import test_secrets_agent as secrets_cases
from agent.probers import http, http_lean
from protocol.checks import parse_checks

# --- the aiohttp prober's cases, run with the lean prober --------------------------------------
# These tests call `http.probe`; the fixture below puts the lean prober there for this module's
# copies of them only.

from test_agent_probers import target, tls_context, tls_target  # noqa: E402,F401  (fixtures)
from test_probers_tls import certs, serve  # noqa: E402,F401  (fixtures)

SHARED = {
    probers_cases: ["test_http_200_is_ok_with_latency_and_status", "test_http_503_fails_with_status",
                    "test_http_expected_status_list_is_what_counts", "test_http_slow_target_fails_with_timeout",
                    "test_http_wrong_body_fails_with_body", "test_http_refused_port_fails_with_connect",
                    "test_http_unresolvable_name_fails_with_dns", "test_http_self_signed_certificate_fails_with_tls",
                    "test_http_self_signed_certificate_passes_without_verification",
                    "test_http_each_probe_opens_a_fresh_connection", "test_http_sends_method_and_headers"],
    tls_cases: ["test_a_valid_chain_is_recorded_with_its_expiry_and_tls_phase", "test_chain_host_and_expiry_decide",
                "test_the_cert_expiry_failure_names_the_date_and_the_threshold",
                "test_the_system_trust_store_does_not_know_the_test_ca", "test_an_unreadable_ca_file_fails_with_tls",
                "test_the_certificate_is_the_last_responses"],
    guard_cases: ["test_guard_on_blocks_a_loopback_target_before_connecting_and_off_it_works",
                  "test_a_name_is_judged_by_the_address_it_resolves_to",
                  "test_disguised_loopback_hosts_are_blocked_before_reaching_the_server",
                  "test_scoped_and_site_local_ipv6_literals_are_blocked_at_once",
                  "test_a_redirect_to_a_decimal_loopback_host_is_blocked", "test_each_redirect_hop_is_judged_again",
                  "test_dns_rebinding_between_hops_is_refused_at_connect_time",
                  "test_a_name_with_mixed_answers_connects_only_to_allowed_addresses",
                  "test_a_refused_connection_to_an_allowed_address_stays_connect"],
    secrets_cases: ["test_credentials_stay_with_their_origin_across_a_redirect",
                    "test_a_redirect_through_another_origin_and_back_gets_the_credentials_back_only_at_home",
                    "test_a_probe_detail_shows_the_credentials_of_a_redirect_target_redacted",
                    "test_a_redirect_loop_ends_with_status_and_a_redacted_detail"],
}
for _module, _names in SHARED.items():
    for _name in _names:
        globals()[f"{_name}__lean"] = getattr(_module, _name)


@pytest.fixture(autouse=True)
def lean_in_place_of_aiohttp(monkeypatch):
    monkeypatch.setattr(http, "probe", http_lean.probe)


def test_every_shared_case_is_run_here():
    # a renamed case upstream would otherwise silently drop out of this module
    for module, names in SHARED.items():
        for name in names:
            assert callable(getattr(module, name)), f"{module.__name__}.{name}"


# --- both probers, result by result -------------------------------------------------------------

AIOHTTP_PROBE = http.probe  # taken before any fixture swaps it


def http_check(url: str, **fields):
    return parse_checks([{"name": "t", "type": "http", "url": url, "interval": "10s", "timeout": "2s", **fields}])[0]


def compared_app() -> web.Application:
    app = target_app()

    async def hop(request):
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/hop/{n - 1}" if n > 1 else "/ok")

    async def see_other(request):
        raise web.HTTPSeeOther("/method")

    async def moved(request):
        raise web.HTTPMovedPermanently("/method")

    async def method(request):
        return web.Response(text=f"method {request.method}")

    async def latin(request):
        return web.Response(body="café".encode("latin-1"), content_type="text/plain", charset="latin-1")

    async def compressed(request):
        response = web.Response(text="status: ok, compressed " + "x" * 2000)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async def no_location(request):
        return web.Response(status=302, text="nowhere")

    async def streamed(request):
        response = web.StreamResponse()
        await response.prepare(request)
        for part in (b"status: ", b"streamed ", b"ok"):
            await response.write(part)
        await response.write_eof()
        return response

    async def big(request):
        return web.Response(body=b"x" * (2 * 1024 * 1024) + b"END")

    app.router.add_get("/hop/{n}", hop)
    app.router.add_route("*", "/see-other", see_other)
    app.router.add_route("*", "/moved", moved)
    app.router.add_route("*", "/method", method)
    app.router.add_get("/latin", latin)
    app.router.add_get("/compressed", compressed)
    app.router.add_get("/no-location", no_location)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/big", big)
    return app


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp("lean-certs"))


@pytest.fixture
async def plain_and_tls(tls_certs):
    plain = await Server(compared_app()).start()
    secure = await Server(compared_app(), tls_certs.server_context(tls_certs.good)).start()
    yield plain, secure
    await secure.stop()
    await plain.stop()


CASES = [
    ("/ok", {"body_match": r"status: ok$"}),
    ("/fail", {}),
    ("/wrong", {"body_match": r"status: ok"}),
    ("/hop/3", {"body_match": "^status: ok$"}),
    ("/hop/12", {}),
    ("/see-other", {"method": "POST", "body_match": "^method GET$"}),
    ("/moved", {"method": "POST", "body_match": "^method GET$"}),
    ("/moved", {"method": "PUT", "body_match": "^method PUT$"}),
    ("/method", {"method": "HEAD"}),
    ("/latin", {"body_match": "café"}),
    ("/compressed", {"body_match": "compressed x+$"}),
    ("/no-location", {"expected_status": [302], "body_match": "nowhere"}),
    ("/streamed", {"body_match": "^status: streamed ok$"}),
    ("/big", {"body_match": "END"}),
    ("/big", {"body_match": "^x+$"}),
    ("/slow?s=2", {"timeout": "200ms"}),
]


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(("path", "fields"), CASES, ids=[f"{p} {sorted(f)}" for p, f in CASES])
async def test_both_probers_give_the_same_result(plain_and_tls, tls_certs, scheme, path, fields):
    server = plain_and_tls[scheme == "https"]
    extra = {"tls_ca_file": tls_certs.ca_file, "min_cert_days": 14} if scheme == "https" else {}
    check = http_check(f"{server.url}{path}", **extra, **fields)
    old, new = await AIOHTTP_PROBE(check), await http_lean.probe(check)
    same = ("ok", "error", "status_code", "detail", "final_url", "redirects", "cert")
    assert {k: getattr(new, k) for k in same} == {k: getattr(old, k) for k in same}
    assert set(new.phases) == set(old.phases) == set(http.PHASES)
    if scheme == "https":
        assert new.phases["tls"] > 0
    if new.ok:
        assert new.phases["connect"] > 0 and new.phases["processing"] > 0 and 0 < new.latency_ms < 2000


# --- what a hand-made client must get right -----------------------------------------------------


async def raw_probe(reply: bytes, **fields):
    """The lean prober against a TCP server that answers `reply` and closes."""
    server = await TcpServer(banner(reply)).start()
    try:
        return await http_lean.probe(http_check(f"http://127.0.0.1:{server.port}/", **fields))
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("reply", "fields", "outcome"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nstat\r\n8\r\nus: ok!!\r\n0\r\n\r\n",
         {"body_match": "^status: ok!!$"}, (True, None, 200)),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
         % (len(gzip.compress(b"status: ok")), gzip.compress(b"status: ok")), {"body_match": "^status: ok$"},
         (True, None, 200)),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + zlib.compress(b"status: ok"),
         {"body_match": "^status: ok$"}, (True, None, 200)),
        (b"HTTP/1.1 200 OK\r\n\r\nstatus: ok until close", {"body_match": "until close$"}, (True, None, 200)),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", {}, (True, None, 204)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", {}, (False, "body", 200)),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nnot gzip at all", {}, (False, "body", 200)),
        (b"HTTP/1.1 2000 What\r\n\r\n", {}, (False, "status", None)),
        (b"SSH-2.0-OpenSSH_9.6\r\n", {}, (False, "status", None)),
        (b"", {}, (False, "connect", None)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", {}, (False, "connect", None)),
    ],
    ids=["chunked", "gzip", "deflate", "until-close", "interim-100", "cut-short", "bad-gzip", "bad-status-line",
         "not-http", "closed-at-once", "closed-in-headers"],
)
async def test_raw_responses_are_judged_as_aiohttp_judges_them(reply, fields, outcome):
    result = await raw_probe(reply, **fields)
    assert (result.ok, result.error, result.status_code) == outcome, result.detail


async def test_a_server_that_never_answers_is_a_timeout_in_processing():
    server = await TcpServer(banner(b"", then_wait=5)).start()
    try:
        result = await http_lean.probe(http_check(f"http://127.0.0.1:{server.port}/", timeout="300ms"))
    finally:
        await server.stop()
    assert (result.ok, result.error, result.detail) == (False, "timeout", "no complete response within 300ms")
    assert 0.25 < result.phases["processing"] < 0.5


async def test_a_tls_server_that_never_finishes_the_handshake_is_a_timeout_in_tls():
    server = await TcpServer(banner(b"", then_wait=5)).start()  # accepts, never speaks TLS
    try:
        result = await http_lean.probe(http_check(f"https://127.0.0.1:{server.port}/", timeout="300ms"))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "timeout")
    assert 0.25 < result.phases["tls"] < 0.5


async def test_the_request_is_one_http11_request_with_the_checks_headers():
    seen: list[bytes] = []

    async def record(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await TcpServer(record).start()
    try:
        check = http_check(f"http://ops:pw@127.0.0.1:{server.port}/a%20b/%C3%A9?q=1&r=a%26b",
                           headers={"accept": "text/plain"})
        results = [await AIOHTTP_PROBE(check, agent_id="eu-1"), await http_lean.probe(check, agent_id="eu-1")]
    finally:
        await server.stop()
    assert all(r.ok for r in results), [r.detail for r in results]
    old, new = (request.decode().split("\r\n") for request in seen)
    assert new[0] == old[0] == "GET /a%20b/%C3%A9?q=1&r=a%26b HTTP/1.1"  # the target exactly as aiohttp sends it
    assert sorted(new[1:-2]) == sorted([f"Host: 127.0.0.1:{server.port}", "accept: text/plain", "Connection: close",
                                        "User-Agent: uptime-agent/0.1 (synthetic probe; agent eu-1)",
                                        "Authorization: Basic b3BzOnB3"])
    assert results[1].final_url == results[0].final_url == f"http://127.0.0.1:{server.port}/a%20b/%C3%A9?q=1&r=a%26b"


def established_to(port: int) -> int:
    """TCP connections of this machine to 127.0.0.1:`port` still established (/proc/net/tcp)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == f"0100007F:{port:04X}" and row[3] == "01")


async def test_many_probes_at_once_leave_no_connection_open():
    server = await Server(target_app()).start()
    try:
        results = await asyncio.gather(*(http_lean.probe(http_check(f"{server.url}/ok")) for _ in range(200)))
        assert all(r.ok for r in results), {r.detail for r in results if not r.ok}
        await asyncio.sleep(0.05)
        assert established_to(server.port) == 0
        _, control = await asyncio.open_connection("127.0.0.1", server.port)  # the count sees an open one
        assert established_to(server.port) == 1
        control.close()
    finally:
        await server.stop()


def test_on_uvloop_as_the_agent_runs_it(tls_certs):
    """The agent's loop is uvloop (agent/cli.py): its start_tls and transports, the chain of a
    refused handshake, a timeout."""
    uvloop = pytest.importorskip("uvloop")
    good = probers_helpers.ThreadedServer(compared_app(), tls_certs.server_context(tls_certs.good)).start()
    wrong = probers_helpers.ThreadedServer(compared_app(), tls_certs.server_context(tls_certs.wrong_host)).start()
    try:
        async def probes():
            ca = {"tls_ca_file": tls_certs.ca_file}
            return [await http_lean.probe(http_check(f"{good.url}/hop/2", body_match="^status: ok$", **ca)),
                    await http_lean.probe(http_check(f"{wrong.url}/ok", **ca)),
                    await http_lean.probe(http_check(f"{good.url}/slow?s=2", timeout="200ms", **ca))]

        ok, refused, late = uvloop.run(probes())
    finally:
        good.stop()
        wrong.stop()
    assert (ok.ok, ok.redirects, ok.cert.verified, ok.cert.not_after) == (True, 2, True, tls_certs.good_until)
    assert ok.phases["tls"] > 0 and ok.phases["processing"] > 0
    assert (refused.ok, refused.error, refused.cert.verified) == (False, "tls", False)
    assert refused.detail.startswith("certificate verify failed: IP address mismatch"), refused.detail
    assert (late.ok, late.error) == (False, "timeout")


async def test_the_agent_picks_the_http_client_by_its_config(monkeypatch):
    from agent.config import ConfigError, parse_config
    from agent.probers import DEFAULT_HTTP_CLIENT, HTTP_CLIENTS, run_probe

    base = {"collector": {"url": "http://127.0.0.1:9", "token": "bench-token-0000000001"}}
    assert parse_config(base).agent.http_client == DEFAULT_HTTP_CLIENT == "lean"
    assert parse_config({**base, "agent": {"http_client": "aiohttp"}}).agent.http_client == "aiohttp"
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "agent": {"http_client": "curl"}})
    assert str(caught.value) == "agent.http_client: invalid http_client 'curl': use lean (the default) or aiohttp"

    called = []
    for name in ("lean", "aiohttp"):
        async def fake(check, *, agent_id=None, guard=None, name=name):
            called.append(name)
            return await http_lean.probe(check, agent_id=agent_id, guard=guard)
        monkeypatch.setitem(HTTP_CLIENTS, name, fake)
    server = await Server(target_app()).start()
    try:
        check = http_check(f"{server.url}/slow?s=0.03", degraded_after="10ms")
        for name in ("aiohttp", "lean"):
            result = await run_probe(check, http_client=name)
            assert (result.ok, result.degraded) == (True, True)  # run_probe's own judgement still applies
    finally:
        await server.stop()
    assert called == ["aiohttp", "lean"]


async def test_a_name_with_several_addresses_is_reached_on_the_one_that_answers():
    port = guard_cases.shared_free_port("127.0.0.2", "127.0.0.3")  # nothing listens on 127.0.0.3
    server = await guard_cases.CountingServer("127.0.0.2", port).start()
    try:
        resolver = guard_cases.MappedResolver({"two.example": [["127.0.0.3", "127.0.0.2"]]})
        result = await http_lean.probe(http_check(f"http://two.example:{port}/"), resolver=resolver)
        assert (result.ok, result.status_code, server.connections) == (True, 200, 1), result.detail
        assert result.phases["resolve"] > 0
        resolver = guard_cases.MappedResolver({"none.example": [["127.0.0.3", "127.0.0.4"]]})
        result = await http_lean.probe(http_check(f"http://none.example:{port}/"), resolver=resolver)
        assert (result.ok, result.error) == (False, "connect"), result.detail
        assert result.detail.startswith(f"Cannot connect to host none.example:{port} ssl:default [")
    finally:
        await server.stop()
