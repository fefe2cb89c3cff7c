"""HTTP(S) prober on asyncio's transports and httptools' parser: the same probe as
agent/probers/http.py (same signature, result fields and failure reasons) at a fraction of the CPU.

An agent spends most of an HTTP probe's time in the client library, not on the wire: aiohttp
builds a session, a connector, a request and a response object with their trace signals, timeouts
and cookie jar for every probe (bench/http_lean.py measures both). A probe needs none of it: one
connection, one request written in one piece, one response parsed by llhttp (httptools, the
parser uvicorn uses), then the connection is closed. What is kept, exactly as http.py does it:

* a fresh connection and a fresh name lookup per probe (no pool, no DNS cache);
* redirects followed here, credentials only to the origin (scheme, host, port) of the check's
  URL, the URL's user info sent as Basic auth (RFC 7617), ten redirects in a row end the probe,
  303 (and 301/302 after a POST) turn the method into GET (RFC 9110 §15.4);
* the SSRF guard judges every address right before connecting to it, on every hop, legacy
  numeric hosts by the address they denote (agent/probers/guard.py);
* TLS through the shared client contexts of agent/probers/tls.py: chain and host name verified
  unless `tls_verify: false`, the presented chain recorded even when the handshake refused it,
  `min_cert_days` judged on the last response's chain;
* blackbox_exporter's phases (resolve, connect, tls, processing until the response headers,
  transfer of the body), summed over redirects, a failed hop charging its last phase;
* the body read up to MAX_BODY_BYTES (gzip and deflate bodies decoded, should a server send one
  unasked) and matched against `body_match`;
* the whole exchange bounded by `check.timeout`, reported as reason `timeout`.

It asks for no compression (no Accept-Encoding) and says `Connection: close`, as a probe that
closes its connection after one response should. Journeys keep aiohttp's client (cookies, bodies,
several requests: agent/probers/journey.py); the agent's `http_client` setting picks this prober
or http.py's for `http` checks (agent/config.py).
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import socket
import ssl
import time
import traceback
import zlib
from typing import Any

import aiohappyeyeballs  # aiohttp's own dependency: its Happy Eyeballs connect
import httptools
from yarl import URL

from protocol.checks import HttpCheck
from protocol.durations import format_duration
from protocol.redact import is_secret_header, redact_text, redact_url, secret_values
from agent.probers import tls
from agent.probers.guard import AddressGuard, Hop, legacy_ipv4
from agent.probers.http import (MAX_BODY_BYTES, MAX_REDIRECTS, PHASES, REDIRECT_STATUSES, FetchFailed, _origin, judge_reply,
                                _short, user_agent)
from agent.probers.result import CertInfo, ProbeResult

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
# aiohttp's default resolver asks the same (a name's addresses of the families configured here).
GAI_FLAGS = socket.AI_ADDRCONFIG
HAPPY_EYEBALLS_DELAY = 0.25  # aiohttp's default (RFC 8305 recommends 250 ms)
CHARSET_RE = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


class ProtocolFailure(Exception):
    """What went wrong on an open connection, with the reason it is reported under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- phase timing ---------------------------------------------------------------------------


class Clock:
    """Phase times of one probe, summed over its hops: each mark ends the phase in progress and
    starts the next; `stop` charges the time since the last mark to the phase in progress (a hop
    that failed half-way, or the body's transfer)."""

    __slots__ = ("phases", "phase", "mark")

    def __init__(self) -> None:
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.phase: str | None = None
        self.mark = 0.0

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self.phase is not None:
            self.phases[self.phase] += now - self.mark
        self.phase, self.mark = phase, now

    def stop(self) -> None:
        if self.phase is not None:
            self.phases[self.phase] += time.perf_counter() - self.mark
            self.phase = None

    def seconds(self) -> dict[str, float]:
        return {name: max(0.0, value) for name, value in self.phases.items()}


# --- one response on one connection -----------------------------------------------------------


class ResponseReader(asyncio.Protocol):
    """Feeds what the connection receives to httptools and resolves `done` when the response is
    complete: its headers (every response), its body up to `limit` (unless `head_only`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, limit: int):
        self.done: asyncio.Future = loop.create_future()
        self.clock = clock
        self.limit = limit
        self.head_only = False  # set for HEAD requests and for redirects: the body is not read
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.lost: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()
        except httptools.HttpParserError as exc:
            if not self.done.done():
                self.done.set_exception(ProtocolFailure("status", f"malformed response: {_short(exc)}"))

    def eof_received(self) -> bool | None:
        self._closed(None)
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc
        self._closed(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim response (100 Continue, 103 Early Hints): the final one follows
            return
        self.status = status
        self.headers_done = True
        self.clock.enter("transfer")
        if self.head_only or (status in REDIRECT_STATUSES and self._header(b"location") is not None):
            self._finish()  # no body to read: a HEAD's, or a redirect's (followed without it)

    def on_body(self, body: bytes) -> None:
        if self.done.done():
            return
        self.chunks.append(body)
        self.size += len(body)
        if self.size >= self.limit:
            self._finish()  # read this far only: the rest is not waited for

    def on_message_complete(self) -> None:
        if self.headers_done:
            self._finish()

    # ending
    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _closed(self, exc: BaseException | None) -> None:
        if self.done.done():
            return
        if not self.headers_done:
            problem = tls.tls_problem(exc) if exc is not None else None
            if problem is not None:
                self.done.set_exception(ProtocolFailure("tls", problem))
            else:
                detail = "Server disconnected" if exc is None else _short(exc)
                self.done.set_exception(ProtocolFailure("connect", detail))
        elif self._length() is None and not self._chunked():
            self._finish()  # no Content-Length, not chunked: the body ends where the connection does
        else:
            self.done.set_exception(ProtocolFailure(
                "body", "unreadable body: Response payload is not completed" + (f": {_short(exc)}" if exc else "")))

    def _header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def _length(self) -> bytes | None:
        return self._header(b"content-length")

    def _chunked(self) -> bool:
        value = self._header(b"transfer-encoding")
        return value is not None and b"chunked" in value.lower()

    def body(self) -> bytes:
        body = b"".join(self.chunks)
        encoding = (self._header(b"content-encoding") or b"").strip().lower()
        if encoding in (b"gzip", b"x-gzip", b"deflate"):
            body = _decoded(body, encoding, self.limit)
        return body[: self.limit]

    def charset(self) -> str:
        content_type = self._header(b"content-type")
        match = CHARSET_RE.search(content_type.decode("latin-1")) if content_type else None
        charset = match.group(1) if match else "utf-8"
        try:
            "".encode(charset)
            return charset
        except LookupError:
            return "utf-8"

    def location(self) -> str | None:
        value = self._header(b"location")
        return value.decode("utf-8", errors="surrogateescape") if value is not None else None


def _decoded(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A compressed body decoded up to `limit` bytes (a truncated body as far as it goes)."""
    if encoding == b"deflate":
        # RFC 9110 §8.4.1.2 means zlib-wrapped; some servers send raw deflate
        wbits = 15 if body[:1] and (body[0] & 0x0F) == 8 else -15
    else:
        wbits = 31
    try:
        return zlib.decompressobj(wbits).decompress(body, limit)
    except zlib.error as exc:
        raise ProtocolFailure("body", f"unreadable body: cannot decode {encoding.decode()}: {exc}") from None


# --- one request with its redirects ---------------------------------------------------------


@dataclasses.dataclass
class Reply:
    status: int
    body: bytes
    charset: str
    url: URL
    redirects: int
    latency_ms: float
    cert: CertInfo | None


class Hops:
    """What the guard did on each hop, for the `blocked` detail (as GuardedConnector.describe_hop)."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def describe_last(self) -> str:
        hop = self.hops[-1]
        reasons: dict[str, str] = {}
        for address, reason in hop.blocked:
            reasons.setdefault(address, reason)
        host = f"[{hop.host}]" if ":" in hop.host else hop.host
        where = f"{host}:{hop.port}" if hop.port else host
        redirect = f" (redirect {len(self.hops) - 1})" if len(self.hops) > 1 else ""
        listed = ", ".join(f"{a} ({r})" for a, r in reasons.items())
        return f"{where}{redirect} blocked by the agent's guard: {listed}"


def _basic(user: str | None, password: str | None) -> str:
    pair = f"{user or ''}:{password or ''}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _request_bytes(method: str, url: URL, headers: dict[str, str]) -> bytes:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.port is not None and url.port != DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{url.port}"
    target = url.raw_path_qs or "/"
    lines = {"host": ("Host", host), "user-agent": None, "accept": ("Accept", "*/*"),
             "connection": ("Connection", "close")}
    for name, value in headers.items():
        lines[name.lower()] = (name, value)
    fields = "".join(f"{n}: {v}\r\n" for n, v in filter(None, lines.values()))
    text = f"{method} {target} HTTP/1.1\r\n{fields}\r\n"
    return text.encode("utf-8")


async def _addresses(host: str, port: int, resolver: Any, loop: asyncio.AbstractEventLoop,
                     clock: Clock) -> list[tuple[int, tuple]]:
    """(family, sockaddr) to try for `host`, in the resolver's order. An IP literal is not looked
    up (no resolve phase, as aiohttp); a name is, on every hop (no cache)."""
    literal = host.split("%", 1)[0]
    try:
        socket.inet_pton(socket.AF_INET, literal)
        return [(socket.AF_INET, (host, port))]
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, literal)
        # a scope (fe80::1%eth0) is read by connect(), after the guard has judged the address
        return [(socket.AF_INET6, (host, port, 0, 0))]
    except OSError:
        pass
    clock.enter("resolve")
    try:
        if resolver is not None:
            answers = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
            found = [(a["family"], (a["host"], a["port"]) if a["family"] == socket.AF_INET
                      else (a["host"], a["port"], 0, 0)) for a in answers]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=GAI_FLAGS)
            found = [(info[0], info[4]) for info in infos]
    except OSError as exc:
        raise FetchFailed("dns", f"Cannot connect to host {host}:{port} ssl:default [{exc.strerror or exc}]") from None
    unique: list[tuple[int, tuple]] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    if not unique:
        raise FetchFailed("dns", f"Cannot connect to host {host}:{port} ssl:default [no address]")
    return unique


async def _connect(loop, url: URL, host: str, port: int, guard: AddressGuard | None, hops: Hops, resolver: Any,
                   clock: Clock, reader: ResponseReader, context: ssl.SSLContext | None):
    """Open a connection for this hop (TLS for https), the guard judging each address first."""
    hop = Hop(host, url.port)
    hops.hops.append(hop)
    if guard is not None:
        legacy = legacy_ipv4(host)
        if legacy is not None:
            reason = guard.why_blocked(legacy)
            if reason is not None:
                hop.blocked.append((str(legacy), reason))
                raise FetchFailed("blocked", hops.describe_last())
    addresses = await _addresses(host, port, resolver, loop, clock)
    clock.enter("connect")
    allowed: list[tuple[int, tuple]] = []
    for family, sockaddr in addresses:
        if guard is not None:
            reason = guard.why_blocked(str(sockaddr[0]))
            if reason is not None:
                hop.blocked.append((str(sockaddr[0]), reason))
                continue
            hop.allowed.append(str(sockaddr[0]))
        allowed.append((family, sockaddr))
    if not allowed:
        raise FetchFailed("blocked", hops.describe_last())
    try:
        sock = await _connected_socket(loop, allowed)
    except (OSError, RuntimeError) as exc:  # uvloop may raise RuntimeError for a failed connect
        reason = getattr(exc, "strerror", None) or _short(exc)
        where = f"[{host}]" if ":" in host else host
        raise FetchFailed("connect", f"Cannot connect to host {where}:{port} ssl:default [{reason}]") from None
    try:
        transport, _ = await loop.create_connection(lambda: reader, sock=sock)
    except BaseException:
        sock.close()
        raise
    if context is None:
        return transport
    clock.enter("tls")
    try:
        return await loop.start_tls(transport, reader, context, server_hostname=host.split("%", 1)[0],
                                    ssl_handshake_timeout=None)
    except BaseException:
        transport.abort()
        raise


async def _connected_socket(loop: asyncio.AbstractEventLoop, addresses: list[tuple[int, tuple]]) -> socket.socket:
    """A socket connected to one of `addresses`: the only one directly; of several, the first to
    answer in a Happy Eyeballs race (RFC 8305, 250 ms apart, families interleaved), as aiohttp
    connects, so that a name whose IPv6 address is unreachable still answers over IPv4."""
    if len(addresses) > 1:
        infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr) for family, sockaddr in addresses]
        return await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
    family, sockaddr = addresses[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def fetch(check: HttpCheck, *, headers: dict[str, str], guard: AddressGuard | None, resolver: Any,
                clock: Clock, context: ssl.SSLContext) -> Reply:
    """The request of `check` with its redirects, bounded by the check's timeout. Raises
    FetchFailed with the reason when there is no final response to judge."""
    loop = asyncio.get_running_loop()
    url = URL(check.url)
    method = check.method
    origin = _origin(url)
    if url.user is not None or url.password is not None:
        headers = {**headers, "Authorization": _basic(url.user, url.password)}
        url = url.with_user(None)
    # What other origins get: no credential at all (is_secret_header covers Authorization).
    elsewhere = {name: value for name, value in headers.items() if not is_secret_header(name)}
    hops = Hops()
    handshakes: list = []
    status: int | None = None
    redirects = 0
    cert: CertInfo | None = None
    transport = None
    reader: ResponseReader | None = None
    started = time.perf_counter()
    token = tls.HANDSHAKE_STARTS.set(handshakes)
    try:
        async with asyncio.timeout(check.timeout):
            while True:
                own_userinfo = url.user is not None or url.password is not None
                if own_userinfo:  # a redirect's own user info goes as its Basic auth, nothing else secret
                    sent = {**elsewhere, "Authorization": _basic(url.user, url.password)}
                    url = url.with_user(None)
                else:
                    sent = headers if _origin(url) == origin else elsewhere
                host = url.host or ""
                port = url.port or DEFAULT_PORTS[url.scheme]
                reader = ResponseReader(loop, clock, MAX_BODY_BYTES)
                reader.head_only = method == "HEAD"
                secure = url.scheme == "https"
                handshakes.clear()
                try:
                    transport = await _connect(loop, url, host, port, guard, hops, resolver, clock, reader,
                                               context if secure else None)
                except ssl.SSLError as exc:
                    cert = _handshake_cert(handshakes) or cert  # a chain refused in the handshake is still shown
                    raise FetchFailed("tls", tls.tls_problem(exc) or _short(exc), redirects=redirects, url=url,
                                      cert=cert) from None
                except OSError as exc:  # hung up during the handshake
                    cert = _handshake_cert(handshakes) or cert
                    problem = tls.tls_problem(exc)
                    raise FetchFailed("tls" if problem or secure else "connect", problem or _short(exc),
                                      redirects=redirects, url=url, cert=cert) from None
                hop_cert = _peer_cert(transport, check.tls_verify) if secure else None
                clock.enter("processing")
                transport.write(_request_bytes(method, url, sent))
                try:
                    await reader.done
                except ProtocolFailure as failure:
                    raise FetchFailed(failure.reason, failure.detail, status_code=reader.status or None,
                                      redirects=redirects, url=url, cert=hop_cert) from None
                status = reader.status
                location = reader.location() if status in REDIRECT_STATUSES else None
                if location is None:
                    try:
                        body = reader.body()
                    except ProtocolFailure as failure:
                        raise FetchFailed(failure.reason, failure.detail, status_code=status, redirects=redirects,
                                          url=url, cert=hop_cert) from None
                    transport.close()
                    transport = None
                    clock.stop()
                    latency = (time.perf_counter() - started) * 1000
                    return Reply(status, body, reader.charset(), url, redirects, latency, hop_cert)
                transport.close()
                transport = None
                clock.stop()
                cert = hop_cert
                redirects += 1
                if redirects >= MAX_REDIRECTS:
                    raise FetchFailed("status", f"{redirects} redirects in a row (the last to {redact_url(location)})",
                                      status_code=status, redirects=redirects, url=url, cert=cert)
                try:
                    url = url.join(URL(location))
                    _origin(url)
                except ValueError:
                    raise FetchFailed("status", f"status {status} redirects to an invalid URL {redact_url(location)!r}",
                                      status_code=status, redirects=redirects, url=url, cert=cert) from None
                if url.scheme not in ("http", "https"):
                    raise FetchFailed("status", f"status {status} redirects to a non-HTTP URL {redact_url(str(url))!r}",
                                      status_code=status, redirects=redirects, url=url, cert=cert)
                # RFC 9110 §15.4: 303 turns any method but HEAD into GET; 301/302 turn POST into GET.
                if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                    method = "GET"
                status = None
    except FetchFailed as failed:
        if failed.url is None:  # raised while connecting: the hop's URL, as http.py reports it
            failed.url, failed.redirects, failed.cert = url, redirects, failed.cert or cert
        raise
    except TimeoutError:
        cert = _handshake_cert(handshakes) or cert
        raise FetchFailed("timeout", f"no complete response within {format_duration(check.timeout)}",
                          status_code=status, redirects=redirects, url=url, cert=cert) from None
    finally:
        clock.stop()
        if transport is not None:
            transport.abort()
        if reader is not None:
            # What the connection reports after the probe has ended (uvloop tells of a refused
            # handshake later) has no one to hear it: the probe has its result.
            if not reader.done.done():
                reader.done.cancel()
            elif not reader.done.cancelled():
                reader.done.exception()
        tls.HANDSHAKE_STARTS.reset(token)


# --- the prober -----------------------------------------------------------------------------


async def probe(
    check: HttpCheck,
    *,
    agent_id: str | None = None,
    guard: AddressGuard | None = None,
    resolver: Any = None,
) -> ProbeResult:
    """Probe `check` as agent/probers/http.py does; the result's detail never shows the check's
    credentials. `resolver`: an aiohttp AbstractResolver to use instead of the system's (tests)."""
    result = await _probe(check, agent_id=agent_id, guard=guard, resolver=resolver)
    if result.detail:
        detail = redact_text(result.detail, secret_values(check.model_dump()))
        if detail != result.detail:
            result = dataclasses.replace(result, detail=detail)
    return result


async def _probe(check: HttpCheck, *, agent_id: str | None, guard: AddressGuard | None, resolver: Any) -> ProbeResult:
    clock = Clock()
    try:
        context = tls.client_context(check.tls_verify, check.tls_ca_file)
    except tls.CaFileError as exc:
        return ProbeResult.failure("tls", str(exc), phases=clock.seconds())
    headers = {"User-Agent": user_agent(agent_id), **check.headers}
    try:
        reply = await fetch(check, headers=headers, guard=guard, resolver=resolver, clock=clock, context=context)
    except FetchFailed as failed:
        return ProbeResult.failure(
            failed.reason, failed.detail, status_code=failed.status_code, phases=clock.seconds(),
            final_url=str(failed.url) if failed.url is not None else None, redirects=failed.redirects, cert=failed.cert,
        )
    except Exception as exc:  # a bug here, not a down target
        log.error(
            "http probe of %s (%s) failed unexpectedly:\n%s", check.name, redact_url(check.url),
            redact_text("".join(traceback.format_exception(exc)), secret_values(check.model_dump())).rstrip(),
        )
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")

    return judge_reply(check, reply, clock.seconds())


# --- helpers --------------------------------------------------------------------------------


def _peer_cert(transport, verified: bool) -> CertInfo | None:
    ssl_object = transport.get_extra_info("ssl_object")
    return _cert_of(ssl_object, verified) if ssl_object is not None else None


def _handshake_cert(handshakes: list) -> CertInfo | None:
    """The chain a failed handshake was shown (the TLS object TimedContext noted), unverified."""
    return _cert_of(handshakes[-1][1], False) if handshakes else None


def _cert_of(ssl_object, verified: bool) -> CertInfo | None:
    try:
        return tls.cert_info(ssl_object, verified=verified)
    except Exception:  # an unreadable certificate must not cost the probe its result
        log.debug("cannot read a presented certificate", exc_info=True)
        return None


__all__ = ["PHASES", "probe"]
