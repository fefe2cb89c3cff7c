"""The TCP prober against real servers on loopback: connect, TLS (right away and by STARTTLS),
send and expect; every failure is a result with its reason."""
from __future__ import annotations

import asyncio

import pytest
from probers_helpers import Certificates, TcpServer, banner, check, echo_upper, imap, smtp

from agent.probers import guard as guard_module
from agent.probers import run_probe, tcp


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp("tcp-certs"))


async def served(handler, ssl_context=None):
    return await TcpServer(handler, ssl_context).start()


def tcp_check(port: int, **fields):
    return check(type="tcp", host="127.0.0.1", port=port, timeout=fields.pop("timeout", "1s"), **fields)


async def test_banner_matching_expect_is_ok_with_connect_phases():
    server = await served(banner(b"220 mail.example.test ESMTP\r\n"))
    try:
        result = await tcp.probe(tcp_check(server.port, expect="^220 "))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (True, None)
    assert set(result.phases) == {"resolve", "connect", "tls"}
    assert result.phases["connect"] > 0 and result.phases["tls"] == 0
    assert 0 < result.latency_ms < 1000
    assert result.detail == "reply matches '^220 ': '220 mail.example.test ESMTP\\r\\n'"


async def test_connect_only_succeeds_without_send_or_expect():
    server = await served(banner(b""))
    try:
        result = await tcp.probe(tcp_check(server.port))
    finally:
        await server.stop()
    assert result.ok and server.connections == 1


async def test_sent_bytes_get_the_expected_reply():
    server = await served(echo_upper)
    try:
        ok = await tcp.probe(tcp_check(server.port, send="ping\r\n", expect=r"^\+PING$"))
        wrong = await tcp.probe(tcp_check(server.port, send="ping\r\n", expect=r"^\+PONG", timeout="300ms"))
    finally:
        await server.stop()
    assert ok.ok, ok.detail
    assert (wrong.ok, wrong.error) == (False, "expect")
    assert wrong.detail == "no reply matching '^\\\\+PONG' within 300ms: got '+PING\\r\\n'"


async def test_a_server_that_hangs_up_without_the_reply_fails_with_expect():
    server = await served(banner(b"500 go away\r\n"))
    try:
        result = await tcp.probe(tcp_check(server.port, expect="^220 "))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "expect")
    assert result.detail == "connection closed before a reply matching '^220 ' (got '500 go away\\r\\n')"
    assert result.latency_ms is not None


async def test_a_silent_server_is_a_timeout():
    server = await served(banner(b"", then_wait=5))
    try:
        result = await tcp.probe(tcp_check(server.port, expect="^220 ", timeout="300ms"))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "timeout")
    assert result.detail == "no reply matching '^220 ' within 300ms (nothing received)"


async def test_refused_port_fails_with_connect():
    server = await served(banner(b""))
    port = server.port
    await server.stop()
    result = await tcp.probe(tcp_check(port))
    assert (result.ok, result.error) == (False, "connect")
    assert f"cannot connect to 127.0.0.1:{port}" in result.detail
    assert result.phases["connect"] > 0


async def test_unresolvable_host_fails_with_dns():
    result = await tcp.probe(check(type="tcp", host="nonexistent.invalid", port=25))
    assert (result.ok, result.error) == (False, "dns")
    assert "nonexistent.invalid" in result.detail


async def test_the_guard_refuses_loopback():
    server = await served(banner(b"220 hi\r\n"))
    try:
        result = await run_probe(tcp_check(server.port, expect="^220"), guard=guard_module.AddressGuard())
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "blocked")
    assert "127.0.0.1 (loopback)" in result.detail
    assert server.connections == 0


async def test_tls_after_connect_records_the_certificate(certs):
    server = await served(echo_upper, certs.server_context(certs.good))
    try:
        result = await tcp.probe(tcp_check(server.port, tls=True, tls_ca_file=certs.ca_file,
                                           send="hello\n", expect=r"^\+HELLO"))
    finally:
        await server.stop()
    assert result.ok, result.detail
    assert result.phases["tls"] > 0
    assert result.cert is not None and result.cert.verified and result.cert.subject == "localhost"
    assert result.cert.not_after == certs.good_until
    assert 89.9 < result.cert.days_left() < 90.1
    assert result.to_wire()["cert_not_after"] == certs.good_until.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("leaf", "fields", "reason", "detail"),
    [
        ("stranger", {}, "tls", "certificate verify failed: unable to get local issuer certificate"),
        ("wrong_host", {}, "tls", "mismatch, certificate is not valid for '127.0.0.1'"),
        ("expiring", {"min_cert_days": 14}, "cert_expiry", "expires in 3.0 days"),
        ("wrong_host", {"tls_verify": False}, None, None),
        ("expiring", {"min_cert_days": 2}, None, None),
    ],
)
async def test_tls_is_judged_by_chain_host_and_expiry(certs, leaf, fields, reason, detail):
    server = await served(banner(b"ok\n"), certs.server_context(getattr(certs, leaf)))
    try:
        result = await tcp.probe(tcp_check(server.port, tls=True, tls_ca_file=certs.ca_file, **fields))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (reason is None, reason)
    if detail is not None:
        assert detail in result.detail
    if reason == "cert_expiry":
        assert result.cert.not_after == certs.expiring_at
        assert "fewer than min_cert_days 14" in result.detail


async def test_a_missing_ca_file_fails_with_tls(tmp_path):
    server = await served(banner(b""))
    try:
        result = await tcp.probe(tcp_check(server.port, tls=True, tls_ca_file=str(tmp_path / "nope.pem")))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "tls")
    assert result.detail.startswith("cannot use tls_ca_file") and "No such file" in result.detail


async def test_smtp_starttls_then_expect_after_tls(certs):
    server = await served(smtp(certs.server_context(certs.good)))
    try:
        result = await tcp.probe(tcp_check(server.port, starttls="smtp", tls_ca_file=certs.ca_file,
                                           send="EHLO probe\r\n", expect="^250 ", min_cert_days=14))
    finally:
        await server.stop()
    assert result.ok, result.detail
    assert result.phases["tls"] > 0 and result.cert.verified


async def test_smtp_server_without_starttls_fails_with_tls(certs):
    server = await served(smtp(None, offer_starttls=False))
    try:
        result = await tcp.probe(tcp_check(server.port, starttls="smtp", tls_ca_file=certs.ca_file))
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "tls")
    assert result.detail == "SMTP server refused STARTTLS: '454 TLS not available'"


async def test_imap_starttls(certs):
    server = await served(imap(certs.server_context(certs.good)))
    try:
        result = await tcp.probe(tcp_check(server.port, starttls="imap", tls_ca_file=certs.ca_file,
                                           send="a2 NOOP\r\n", expect="^a2 OK"))
    finally:
        await server.stop()
    assert result.ok, result.detail


async def test_a_slow_banner_is_ok_but_degraded():
    server = await served(banner(b"220 late\r\n", delay=0.2))
    try:
        slow = await run_probe(tcp_check(server.port, expect="^220", degraded_after="50ms"))
        judged_fast = await run_probe(tcp_check(server.port, expect="^220", degraded_after="900ms"))
        unjudged = await run_probe(tcp_check(server.port, expect="^220"))
    finally:
        await server.stop()
    assert (slow.ok, slow.degraded) == (True, True)
    assert slow.detail.startswith("degraded: ") and "slower than degraded_after 50ms" in slow.detail
    assert slow.to_wire()["degraded"] is True
    assert (judged_fast.ok, judged_fast.degraded) == (True, False)
    assert unjudged.degraded is None and "degraded" not in unjudged.to_wire()


async def test_the_probe_ends_within_its_timeout_even_in_a_tls_handshake_that_stalls(certs):
    # a server that accepts and never speaks TLS: the handshake waits until the timeout
    server = await served(banner(b"", then_wait=5))
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await tcp.probe(tcp_check(server.port, tls=True, timeout="300ms"))
        took = loop.time() - t0
    finally:
        await server.stop()
    assert (result.ok, result.error) == (False, "timeout")
    assert result.detail == "TLS handshake not done within 300ms"
    assert took < 1.2
    assert result.phases["tls"] >= 0.25
