"""TCP prober: connect to host:port; optionally TLS, right after connecting (`tls: true`) or after
an SMTP or IMAP STARTTLS exchange (`starttls: smtp|imap`); then optionally send `send` and expect
a reply matching the regex `expect` (blackbox_exporter's tcp module with one query_response).

Failure reasons (wire-protocol.md): dns, connect, timeout, tls, `cert_expiry` (the presented chain
ends sooner than `min_cert_days`), `expect` (the reply, or a STARTTLS dialogue, was not what was
expected), `blocked` (the agent's SSRF guard refused every address: agent/probers/guard.py),
`internal` only for a bug here. Phases: resolve, connect, tls (0 without TLS).

The whole probe is bounded by `check.timeout`. Waiting for `expect`, the reply is read up to
MAX_REPLY_BYTES; it ends the probe with `expect` when it closes or fills that without matching,
or when the time runs out after something arrived (nothing at all is a `timeout`).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time

from protocol.checks import TcpCheck
from protocol.durations import format_duration
from agent.probers import tls
from agent.probers.guard import AddressGuard
from agent.probers.result import CertInfo, ProbeResult

log = logging.getLogger(__name__)

PHASES = ("resolve", "connect", "tls")
# The most of a reply read while waiting for `expect` (a banner or a short answer fits easily).
MAX_REPLY_BYTES = 64 * 1024
READ_CHUNK = 4096
# How long closing the connection may take after the verdict (a TLS close_notify left unanswered
# must not hold the probe).
CLOSE_SECONDS = 0.5
EHLO_NAME = "uptime-agent.invalid"  # RFC 5321 §4.1.4 wants a name; RFC 6761 reserves .invalid


class _Failed(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def probe(check: TcpCheck, *, agent_id: str | None = None, guard: AddressGuard | None = None) -> ProbeResult:
    """1. resolve; 2. connect to the first address that answers (with a guard, allowed ones
    only); 3. STARTTLS dialogue, then TLS, when asked; 4. judge the certificate's expiry;
    5. send; 6. read until the reply matches `expect`."""
    phases = dict.fromkeys(PHASES, 0.0)
    context = None
    if check.uses_tls:
        try:  # before the clock starts: loading the system's CAs the first time takes a while
            context = tls.client_context(check.tls_verify, check.tls_ca_file)
        except tls.CaFileError as exc:
            return ProbeResult.failure("tls", str(exc), phases=phases)
    started = time.perf_counter()
    stage, stage_started = "resolve", started
    writer: asyncio.StreamWriter | None = None
    cert: CertInfo | None = None
    received = bytearray()

    def enter(next_stage: str) -> None:
        nonlocal stage, stage_started
        now = time.perf_counter()
        if stage in phases:
            phases[stage] += now - stage_started
        stage, stage_started = next_stage, now

    def result(ok: bool, reason: str | None = None, detail: str | None = None) -> ProbeResult:
        enter("done")
        latency = (time.perf_counter() - started) * 1000 if ok or reason in ("expect", "cert_expiry") else None
        if ok:
            return ProbeResult.success(latency, detail=detail, phases=phases, cert=cert)
        return ProbeResult.failure(reason, detail, latency_ms=latency, phases=phases, cert=cert)

    try:
        async with asyncio.timeout(check.timeout):
            addresses = await _addresses(check.host, check.port)
            if isinstance(addresses, str):
                return result(False, "dns", addresses)
            if guard is not None:
                refused = [(a, guard.why_blocked(a)) for a in addresses]
                addresses = [a for a, why in refused if why is None]
                if not addresses:
                    listed = ", ".join(f"{a} ({why})" for a, why in refused)
                    return result(False, "blocked", f"{check.host}:{check.port} blocked by the agent's guard: {listed}")
            enter("connect")
            reader, writer, problem = await _connect(addresses, check.port)
            if writer is None:
                return result(False, "connect", f"cannot connect to {check.host}:{check.port}: {problem}")
            if check.starttls is not None:
                enter("starttls")
                await _starttls(reader, writer, check.starttls, received)
            if context is not None:
                enter("tls")
                received.clear()
                try:
                    await writer.start_tls(context, server_hostname=check.host)
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    return result(False, "tls", tls.tls_problem(exc) or f"TLS handshake failed: {exc}")
                except (ConnectionError, OSError, EOFError) as exc:
                    return result(False, "tls", f"connection lost in the TLS handshake: {_text(exc)}")
                enter("tls done")
                ssl_object = writer.get_extra_info("ssl_object")
                if ssl_object is not None:
                    cert = tls.cert_info(ssl_object, verified=check.tls_verify)
                    problem = tls.expiry_problem(cert, check.min_cert_days) if cert is not None else None
                    if problem is not None:
                        return result(False, "cert_expiry", problem)
            if check.send:
                enter("send")
                writer.write(check.send.encode())
                await writer.drain()
            if check.expect is not None:
                enter("expect")
                received.clear()
                reply = await _expect(reader, check.expect, received)
                return result(True, detail=f"reply matches {check.expect!r}: {_quote(reply)}")
            return result(True)
    except _Failed as failed:
        return result(False, failed.reason, failed.detail)
    except TimeoutError:
        within = format_duration(check.timeout)
        if stage == "resolve":
            return result(False, "timeout", f"{check.host!r} not resolved within {within}")
        if stage == "connect":
            return result(False, "timeout", f"no connection to {check.host}:{check.port} within {within}")
        if stage == "tls":
            return result(False, "timeout", f"TLS handshake not done within {within}")
        if stage in ("expect", "starttls") and received:
            what = f"no reply matching {check.expect!r}" if stage == "expect" else f"STARTTLS ({check.starttls}) not done"
            return result(False, "expect", f"{what} within {within}: got {_quote(bytes(received))}")
        waited = f"no reply matching {check.expect!r}" if stage == "expect" else f"{stage} not done"
        return result(False, "timeout", f"{waited} within {within} (nothing received)")
    except (ConnectionError, OSError, EOFError) as exc:
        return result(False, "connect", f"connection to {check.host}:{check.port} lost during {stage}: {_text(exc)}")
    except Exception as exc:  # a bug here, not a down target
        log.exception("tcp probe of %s (%s:%d) failed unexpectedly", check.name, check.host, check.port)
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)


async def _addresses(host: str, port: int) -> list[str] | str:
    """The addresses to try, in the resolver's order, or why there are none. An IP address is
    its own (no resolver asked, as aiohttp does for HTTP checks)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}"
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _connect(addresses: list[str], port: int):
    """(reader, writer, None) of the first address that accepts, else (None, None, why)."""
    problem = "no address"
    for address in addresses:
        try:
            reader, writer = await asyncio.open_connection(address, port)
            return reader, writer, None
        except OSError as exc:
            problem = f"{address}: {_text(exc)}"
    return None, None, problem


async def _expect(reader: asyncio.StreamReader, pattern: str, received: bytearray) -> bytes:
    """Read until the reply (so far) matches `pattern`, line-wise (re.MULTILINE)."""
    regex = re.compile(pattern, re.MULTILINE)
    while True:
        # line-wise, as blackbox_exporter matches each line: `$` ends a line whether CRLF or LF does
        if regex.search(received.decode("utf-8", errors="replace").replace("\r\n", "\n")):
            return bytes(received)
        if len(received) >= MAX_REPLY_BYTES:
            raise _Failed("expect", f"the first {MAX_REPLY_BYTES} bytes of the reply do not match {pattern!r}: "
                                    f"{_quote(bytes(received))}")
        chunk = await reader.read(min(READ_CHUNK, MAX_REPLY_BYTES - len(received)))
        if not chunk:
            what = f"got {_quote(bytes(received))}" if received else "nothing received"
            raise _Failed("expect", f"connection closed before a reply matching {pattern!r} ({what})")
        received.extend(chunk)


async def _line(reader: asyncio.StreamReader, received: bytearray) -> str:
    try:
        line = await reader.readline()
    except (ValueError, asyncio.LimitOverrunError):
        raise _Failed("expect", "a line of the STARTTLS dialogue is too long") from None
    if not line:
        raise _Failed("expect", "connection closed in the STARTTLS dialogue"
                                + (f" after {_quote(bytes(received))}" if received else ""))
    received.extend(line)
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


async def _smtp_reply(reader: asyncio.StreamReader, received: bytearray) -> str:
    """An SMTP reply's last line (RFC 5321 §4.2: `250-...` lines continue, `250 ...` ends it)."""
    while True:
        line = await _line(reader, received)
        if len(line) < 4 or line[3] != "-":
            return line


async def _starttls(reader, writer, protocol: str, received: bytearray) -> None:
    """The plain-text dialogue that asks the server to switch to TLS (RFC 3207 for SMTP, RFC 9051
    §6.2.1 for IMAP); a server that refuses fails with `tls`, one that speaks otherwise `expect`."""
    if protocol == "smtp":
        greeting = await _smtp_reply(reader, received)
        if not greeting.startswith("220"):
            raise _Failed("expect", f"SMTP greeting is not 220: {greeting[:200]!r}")
        writer.write(f"EHLO {EHLO_NAME}\r\n".encode())
        reply = await _smtp_reply(reader, received)
        if not reply.startswith("250"):
            raise _Failed("expect", f"SMTP EHLO answered {reply[:200]!r}")
        writer.write(b"STARTTLS\r\n")
        reply = await _smtp_reply(reader, received)
        if not reply.startswith("220"):
            raise _Failed("tls", f"SMTP server refused STARTTLS: {reply[:200]!r}")
        return
    greeting = await _line(reader, received)
    if not greeting.upper().startswith("* OK"):
        raise _Failed("expect", f"IMAP greeting is not '* OK': {greeting[:200]!r}")
    writer.write(b"a1 STARTTLS\r\n")
    while True:
        line = await _line(reader, received)
        if line.lower().startswith("a1 "):
            break
    if not line[3:].upper().startswith("OK"):
        raise _Failed("tls", f"IMAP server refused STARTTLS: {line[:200]!r}")


def _quote(data: bytes, limit: int = 120) -> str:
    text = data.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _text(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
