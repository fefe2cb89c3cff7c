"""The DNS prober against a real DNS server on loopback (dnslib, UDP and TCP on one port)."""
from __future__ import annotations

import socket

import pytest
from probers_helpers import DnsServer, ZoneResolver, check

from agent.probers import dns as dns_prober
from agent.probers import guard as guard_module
from agent.probers import run_probe


@pytest.fixture(scope="module")
def server():
    dns_server = DnsServer().start()
    yield dns_server
    dns_server.stop()


def dns_check(server: DnsServer, query: str, **fields):
    return check(type="dns", query=query, server=server.address, timeout=fields.pop("timeout", "1s"), **fields)


async def test_expected_answers_pass_with_rcode_answers_and_lookup_time(server):
    result = await dns_prober.probe(dns_check(server, "www.example.test", expect_answers=["192.0.2.10"]))
    assert (result.ok, result.error, result.rcode) == (True, None, "NOERROR")
    assert result.answers == ("192.0.2.10", "192.0.2.11")
    assert set(result.phases) == {"lookup"} and 0 < result.phases["lookup"] < 1
    assert result.latency_ms == pytest.approx(result.phases["lookup"] * 1000, abs=0.01)
    wire = result.to_wire()
    assert (wire["rcode"], wire["answers"], wire["phases"]) == ("NOERROR", ["192.0.2.10", "192.0.2.11"],
                                                                 {"lookup": result.phases["lookup"]})


async def test_a_missing_answer_fails_with_answer(server):
    result = await dns_prober.probe(dns_check(server, "www.example.test", expect_answers=["192.0.2.10", "192.0.2.99"]))
    assert (result.ok, result.error) == (False, "answer")
    assert result.detail == (f"www.example.test A at {server.address}: '192.0.2.99' not among the answers "
                             "'192.0.2.10', '192.0.2.11'")
    assert result.answers == ("192.0.2.10", "192.0.2.11")  # what came is kept with the failure


async def test_answers_by_regex(server):
    ok = await dns_prober.probe(dns_check(server, "www.example.test", expect_answers_regex=[r"^192\.0\.2\.1[01]$"]))
    bad = await dns_prober.probe(dns_check(server, "www.example.test", expect_answers_regex=[r"^10\."]))
    assert ok.ok
    assert (bad.ok, bad.error) == (False, "answer")
    assert "no answer matches '^10\\\\.'" in bad.detail


@pytest.mark.parametrize(
    ("query", "record", "answers", "expected"),
    [
        ("www.example.test", "AAAA", ("2001:db8::10",), ["2001:0db8:0::10"]),  # compared as addresses
        ("alias.example.test", "CNAME", ("www.example.test.",), ["WWW.example.test"]),  # names without case or dot
        ("example.test", "MX", ("10 mail.example.test.",), ["10 mail.example.test"]),
        ("example.test", "TXT", ("v=spf1 -all",), ["v=spf1 -all"]),
        ("example.test", "NS", ("ns1.example.test.", "ns2.example.test."), ["ns2.example.test"]),
        ("example.test", "SOA", ("ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 300",), None),
    ],
)
async def test_each_record_type(server, query, record, answers, expected):
    result = await dns_prober.probe(dns_check(server, query, record=record, expect_answers=expected))
    assert (result.ok, result.answers) == (True, answers), result.detail


async def test_nxdomain_fails_with_rcode_unless_expected(server):
    failed = await dns_prober.probe(dns_check(server, "nope.example.test"))
    expected = await dns_prober.probe(dns_check(server, "nope.example.test", expect_rcode="NXDOMAIN"))
    assert (failed.ok, failed.error, failed.rcode, failed.answers) == (False, "rcode", "NXDOMAIN", ())
    assert failed.detail == f"nope.example.test A at {server.address}: rcode NXDOMAIN, expected NOERROR"
    assert (expected.ok, expected.rcode) == (True, "NXDOMAIN")


async def test_refused_rcode(server):
    result = await dns_prober.probe(dns_check(server, "refused.example.test"))
    assert (result.ok, result.error, result.rcode) == (False, "rcode", "REFUSED")


async def test_a_truncated_udp_answer_is_asked_again_over_tcp(server):
    before = len(server.resolver.seen)
    result = await dns_prober.probe(dns_check(server, "big.example.test"))
    asked = [protocol for name, _, protocol in server.resolver.seen[before:] if name == "big.example.test."]
    assert asked == ["udp", "tcp"]
    assert result.ok and result.rcode == "NOERROR"
    assert len(result.answers) == 50  # the wire protocol's bound on answers; all 60 came
    assert result.phases["lookup"] > 0


async def test_tcp_only_transport(server):
    before = len(server.resolver.seen)
    result = await dns_prober.probe(dns_check(server, "www.example.test", transport="tcp"))
    assert result.ok
    assert [p for n, _, p in server.resolver.seen[before:] if n == "www.example.test."] == ["tcp"]


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(server):
    result = await dns_prober.probe(dns_check(server, "slow.example.test", timeout="300ms"))
    assert (result.ok, result.error) == (False, "timeout")
    assert result.detail == f"no answer from {server.address} within 300ms"
    assert result.phases["lookup"] >= 0.29
    assert ZoneResolver.SLOW_SECONDS > 0.3


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_closed_port_fails_with_connect_over_tcp():
    port = _free_port(socket.SOCK_STREAM)
    result = await dns_prober.probe(check(type="dns", query="www.example.test", server=f"127.0.0.1:{port}",
                                          transport="tcp", timeout="1s"))
    assert (result.ok, result.error) == (False, "connect")
    assert result.detail.startswith(f"127.0.0.1:{port} over tcp:")


async def test_a_closed_udp_port_is_a_timeout():
    # dnspython's UDP socket is not connected, so the ICMP port unreachable goes unheard: the
    # query waits for its timeout, as a dropped datagram would
    port = _free_port(socket.SOCK_DGRAM)
    result = await dns_prober.probe(check(type="dns", query="www.example.test", server=f"127.0.0.1:{port}",
                                          timeout="300ms"))
    assert (result.ok, result.error) == (False, "timeout")


async def test_a_server_name_that_does_not_resolve_fails_with_dns():
    result = await dns_prober.probe(check(type="dns", query="www.example.test", server="resolver.nonexistent.invalid"))
    assert (result.ok, result.error) == (False, "dns")
    assert "resolver.nonexistent.invalid" in result.detail


async def test_the_guard_refuses_a_private_server_given_in_the_check(server):
    result = await run_probe(dns_check(server, "www.example.test"), guard=guard_module.AddressGuard())
    assert (result.ok, result.error) == (False, "blocked")
    assert result.detail == "server 127.0.0.1 blocked by the agent's guard (loopback)"


def test_the_system_resolver_is_the_first_nameserver_of_resolv_conf(tmp_path, monkeypatch):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# test\nsearch example.test\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    monkeypatch.setattr(dns_prober, "RESOLV_CONF", str(conf))
    monkeypatch.setattr(dns_prober, "_system", (None, None))
    assert dns_prober.system_server() == ("192.0.2.53", 53)
    conf.write_text("search example.test\n")
    import os

    os.utime(conf, (1, 1))  # a changed file is read again
    assert dns_prober.system_server() is None


async def test_without_a_nameserver_the_check_says_so(tmp_path, monkeypatch):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.test\n")
    monkeypatch.setattr(dns_prober, "RESOLV_CONF", str(conf))
    monkeypatch.setattr(dns_prober, "_system", (None, None))
    result = await dns_prober.probe(check(type="dns", query="www.example.test"))
    assert (result.ok, result.error) == (False, "dns")
    assert result.detail == f"no nameserver in {conf} (give the check a server)"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": "a..example"}, "checks.0.query: invalid name 'a..example': labels of 1-63 letters, digits, '-' or "
                                  "'_', at most 253 characters"),
        ({"query": "a.example", "record": "PTR"}, "checks.0.record: input should be 'A', 'AAAA', 'CNAME', 'MX', "
                                                  "'TXT', 'NS' or 'SOA', got 'PTR'"),
        ({"query": "a.example", "server": "127.0.0.1:99999"}, "checks.0.server: invalid server '127.0.0.1:99999': "
                                                               "use host, host:port or [IPv6]:port (port 1-65535)"),
        ({"query": "a.example", "expect_rcode": "NOPE"}, "checks.0.expect_rcode: unknown rcode 'NOPE' (one of "
                                                         "NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, "
                                                         "YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE)"),
        ({"query": "a.example", "expect_rcode": "NXDOMAIN", "expect_answers": ["192.0.2.1"]},
         "checks.0.expect_answers: a NXDOMAIN response has no answers, so it can never match: drop it or expect "
         "NOERROR"),
        ({"query": "a.example", "expect_answers_regex": ["("]},
         "checks.0.expect_answers_regex.0: invalid regex '(': missing ), unterminated subpattern at position 0"),
        ({"query": "a.example", "timeout": "2s", "degraded_after": "3s"},
         "checks.0.degraded_after: degraded_after 3s must be less than timeout 2s (a probe that slow fails with "
         "timeout)"),
    ],
)
def test_invalid_dns_checks_name_the_field(fields, message):
    from protocol.checks import ConfigError, parse_checks

    with pytest.raises(ConfigError) as caught:
        parse_checks([{"name": "d", "type": "dns", **fields}])
    assert str(caught.value) == message


def test_servers_are_written_as_host_port():
    from protocol.checks import dns_server

    assert dns_server("192.0.2.53") == ("192.0.2.53", 53)
    assert dns_server("dns.example.test:5353") == ("dns.example.test", 5353)
    assert dns_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    assert dns_server("2001:db8::53") == ("2001:db8::53", 53)
