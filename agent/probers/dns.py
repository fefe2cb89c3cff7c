"""DNS prober (dnspython): one query of `query` for `record` at `server`, over UDP with a TCP retry
when the answer comes back truncated (or over TCP only: `transport: tcp`), judged by the response
code and the answers.

`server` unset: the first nameserver of the agent's /etc/resolv.conf (the system's resolver, as
the agent's other lookups use it). A server given by name is resolved first (reason `dns` if that
fails); with the agent's SSRF guard on, a server given in the check must not be a private address
(reason `blocked`), while the system's own resolver is the agent operator's and always allowed.

Failure reasons (wire-protocol.md): `timeout` (no answer in time), `connect` (the server refused:
ICMP port unreachable over UDP, a refused or reset TCP connection), `dns` (the server's name does
not resolve, no system resolver, or a malformed answer), `rcode` (a response code other than
`expect_rcode`), `answer` (an expected answer missing), `blocked`, `internal`. Phase: `lookup`, the
query's round trip (both tries when it fell back to TCP); blackbox_exporter exports it as
probe_dns_lookup_time_seconds.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from protocol.checks import DnsCheck
from protocol.durations import format_duration
from agent.probers.guard import AddressGuard
from agent.probers.result import ProbeResult

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
# Record types whose answers are names: compared without case or a trailing dot.
NAME_TYPES = frozenset({"CNAME", "NS", "MX", "SOA"})

_system: tuple[float | None, tuple[str, int] | None] = (None, None)  # (resolv.conf mtime, first nameserver)


def system_server() -> tuple[str, int] | None:
    """The first nameserver of /etc/resolv.conf (read again when the file changes), or None."""
    global _system
    try:
        stamp = os.stat(RESOLV_CONF).st_mtime
    except OSError:
        stamp = None
    if _system[0] == stamp and _system[1] is not None:
        return _system[1]
    try:
        resolver = dns.resolver.Resolver(filename=RESOLV_CONF)
        nameservers = [str(n) for n in resolver.nameservers]
        found = (nameservers[0], int(resolver.port)) if nameservers else None
    except (dns.resolver.NoResolverConfiguration, OSError, ValueError):
        found = None
    _system = (stamp, found)
    return found


def render(rdata) -> str:
    """An answer as text: TXT as its strings joined (RFC 7208 §3.3), the rest in zone file form."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return "".join(part.decode("utf-8", errors="replace") for part in rdata.strings)
    return rdata.to_text()


def normal(record: str, text: str) -> str:
    """The form answers are compared in: addresses canonical, names lower case without a final dot."""
    text = text.strip()
    if record in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text
    if record in NAME_TYPES:
        return " ".join(part.rstrip(".").lower() if part.rstrip(".") else part for part in text.split())
    return text


async def probe(check: DnsCheck, *, agent_id: str | None = None, guard: AddressGuard | None = None) -> ProbeResult:
    """1. find the server (the check's, resolved, guarded; or the system's); 2. query it within
    `timeout`; 3. judge the response code, then the answers."""
    phases = {"lookup": 0.0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + check.timeout
    given = check.server_address()
    if given is None:
        where = system_server()
        if where is None:
            return ProbeResult.failure("dns", f"no nameserver in {RESOLV_CONF} (give the check a server)", phases=phases)
        host, port = where
    else:
        host, port = given
    try:
        address = await _address(host, port, deadline)
    except TimeoutError:
        return ProbeResult.failure("timeout", f"server {host!r} not resolved within {format_duration(check.timeout)}",
                                   phases=phases)
    except (socket.gaierror, UnicodeError) as exc:
        return ProbeResult.failure("dns", f"cannot resolve server {host!r}: {getattr(exc, 'strerror', None) or exc}",
                                   phases=phases)
    if guard is not None and given is not None:
        why = guard.why_blocked(address)
        if why is not None:
            return ProbeResult.failure("blocked", f"server {address} blocked by the agent's guard ({why})", phases=phases)
    server = f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
    query = dns.message.make_query(check.query, check.record)
    started = time.perf_counter()

    def failed(reason: str, detail: str) -> ProbeResult:
        phases["lookup"] = time.perf_counter() - started
        return ProbeResult.failure(reason, detail, phases=phases)

    try:
        remaining = max(0.001, deadline - loop.time())
        async with asyncio.timeout(remaining):
            if check.transport == "tcp":
                response = await dns.asyncquery.tcp(query, address, timeout=remaining, port=port)
            else:
                response, _tcp = await dns.asyncquery.udp_with_fallback(query, address, timeout=remaining, port=port)
    except (TimeoutError, dns.exception.Timeout):
        return failed("timeout", f"no answer from {server} within {format_duration(check.timeout)}")
    except (ConnectionError, EOFError, OSError) as exc:
        return failed("connect", f"{server} over {check.transport}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}")
    except dns.exception.DNSException as exc:  # malformed, mismatched or unexpected answers
        return failed("dns", f"bad answer from {server}: {exc or type(exc).__name__}")
    except Exception as exc:  # a bug here, not a down server
        log.exception("dns probe of %s (%s %s at %s) failed unexpectedly", check.name, check.query, check.record, server)
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}", phases=phases)
    lookup = time.perf_counter() - started
    phases["lookup"] = lookup
    rcode = dns.rcode.to_text(response.rcode())
    wanted = dns.rdatatype.from_text(check.record)
    answers = tuple(render(rdata) for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset)
    details = {"latency_ms": lookup * 1000, "phases": phases, "rcode": rcode, "answers": answers}
    asked = f"{check.query} {check.record} at {server}"
    if rcode != check.expect_rcode:
        return ProbeResult.failure("rcode", f"{asked}: rcode {rcode}, expected {check.expect_rcode}", **details)
    have = {normal(check.record, a) for a in answers}
    for expected in check.expect_answers or ():
        if normal(check.record, expected) not in have:
            return ProbeResult.failure("answer", f"{asked}: {expected!r} not among the answers {_listed(answers)}",
                                       **details)
    for pattern in check.expect_answers_regex or ():
        regex = re.compile(pattern)
        if not any(regex.search(a) for a in answers):
            return ProbeResult.failure("answer", f"{asked}: no answer matches {pattern!r} (answers {_listed(answers)})",
                                       **details)
    latency = details.pop("latency_ms")
    return ProbeResult.success(latency, detail=f"{asked}: {rcode}, {len(answers)} answers", **details)


async def _address(host: str, port: int, deadline: float) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(max(0.001, deadline - loop.time())):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return infos[0][4][0]


def _listed(answers: tuple[str, ...]) -> str:
    if not answers:
        return "(none)"
    shown = ", ".join(repr(a[:80]) for a in answers[:5])
    return shown + (f" and {len(answers) - 5} more" if len(answers) > 5 else "")
