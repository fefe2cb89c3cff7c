"""HTTP(S) prober: one request over a fresh connection, judged by status and optionally body.

Failure reasons (wire-protocol.md): dns, connect, timeout, tls, status, body; `cert_expiry` when
the presented chain ends sooner than the check's `min_cert_days`; `blocked` when the agent's SSRF
guard refused every address the target (or a redirect hop) resolved to (see
agent/probers/guard.py); `internal` only for a bug in this module, which is also logged with its
traceback.

Every result carries blackbox_exporter's phase times (`resolve`, `connect`, `tls`, `processing`
until the response headers, `transfer` of the body; summed over redirects as the exporter sums
them, 0 for a phase that did not happen), the final URL (redacted) and the number of redirects
followed, and for HTTPS the presented certificate chain (agent/probers/tls.py).

Redirects are followed here, not by aiohttp, so that a check's credentials reach only the origin
(scheme, host, port) of its own URL: on a hop to another origin the user info of the URL and every
secret header (protocol/redact.py: Authorization, Cookie, X-Api-Key, any *token*/*key*/... header)
stay behind; other custom headers go on. aiohttp itself drops only Authorization and Cookie.
A probe's `detail` and its log lines show the check's credentials redacted.

`fetch()` is the request with its redirects, shared with journey steps (agent/probers/journey.py).
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import ssl
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import TraceConfig
from multidict import CIMultiDictProxy
from yarl import URL

from protocol.checks import HttpCheck
from protocol.durations import format_duration
from protocol.redact import is_secret_header, redact_text, redact_url, secret_values
from agent.probers import tls
from agent.probers.guard import AddressGuard, GuardedConnector
from agent.probers.result import CertInfo, ProbeResult

log = logging.getLogger(__name__)

# A health page fits easily; a larger body is read (and matched) only this far, so a probe of a
# big download costs bounded memory and its latency stays "time to a usable answer".
MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "uptime-agent/0.1 (synthetic probe)"
# As aiohttp's own limit: the tenth redirect response in a row ends the probe (a loop, most likely).
MAX_REDIRECTS = 10
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# blackbox_exporter's names (prober/http.go), in the order they happen.
PHASES = ("resolve", "connect", "tls", "processing", "transfer")


def user_agent(agent_id: str | None) -> str:
    """Names the vantage point, so the target's operators can tell which agent's request failed."""
    return f"uptime-agent/0.1 (synthetic probe; agent {agent_id})" if agent_id else USER_AGENT


# --- phase timing ---------------------------------------------------------------------------


@dataclass
class Timing:
    """Phase times of one request and its redirects. aiohttp's trace signals mark each hop
    (connection asked for, name resolved, connection made, response headers read); the TLS
    context marks the handshake's start (agent/probers/tls.py); `close_hop` adds the hop's phases.
    A hop that failed half-way charges the time since its last mark to the phase it was in."""

    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    handshakes: list[tuple[float, Any]] = field(default_factory=list)  # (start, SSLObject) from tls.TimedContext
    ssl_object: Any = None  # of the last hop's handshake
    create_start: float | None = None
    dns_start: float | None = None
    dns_end: float | None = None
    create_end: float | None = None
    response_start: float | None = None

    def close_hop(self, end: float | None = None) -> None:
        end = time.perf_counter() if end is None else end
        p = self.phases
        if self.create_start is not None:
            if self.dns_start is not None:
                p["resolve"] += (self.dns_end if self.dns_end is not None else end) - self.dns_start
            if self.dns_start is None or self.dns_end is not None:
                since = self.dns_end if self.dns_end is not None else self.create_start
                handshake = next((t for t, _ in self.handshakes if t >= since), None)
                ready = self.create_end if self.create_end is not None else end
                if handshake is not None:
                    p["connect"] += handshake - since
                    p["tls"] += ready - handshake
                else:
                    p["connect"] += ready - since
            if self.create_end is not None:
                if self.response_start is not None:
                    p["processing"] += self.response_start - self.create_end
                    p["transfer"] += end - self.response_start
                else:
                    p["processing"] += end - self.create_end
        self.ssl_object = self.handshakes[-1][1] if self.handshakes else None
        self.create_start = self.dns_start = self.dns_end = self.create_end = self.response_start = None
        self.handshakes.clear()

    def seconds(self) -> dict[str, float]:
        return {name: max(0.0, value) for name, value in self.phases.items()}


def _marker(attribute: str):
    async def mark(session, context, params) -> None:
        timing = context.trace_request_ctx
        if isinstance(timing, Timing):
            setattr(timing, attribute, time.perf_counter())
    return mark


def _trace_config() -> TraceConfig:
    config = TraceConfig()
    config.on_connection_create_start.append(_marker("create_start"))
    config.on_dns_resolvehost_start.append(_marker("dns_start"))
    config.on_dns_resolvehost_end.append(_marker("dns_end"))
    config.on_connection_create_end.append(_marker("create_end"))
    config.on_request_end.append(_marker("response_start"))
    return config


# One for every session: it holds no state (each request's Timing comes as its trace_request_ctx).
TRACE = _trace_config()


# --- one request with its redirects ---------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy
    body: bytes
    charset: str
    url: URL  # of the last response
    redirects: int
    latency_ms: float
    cert: CertInfo | None


class FetchFailed(Exception):
    """How `fetch` ends when there is no final response to judge: the failure's reason and detail
    (the probers turn it into a result; it never leaves this package)."""

    def __init__(self, reason: str, detail: str, *, status_code: int | None = None, redirects: int = 0,
                 url: URL | None = None, cert: CertInfo | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status_code = status_code
        self.redirects = redirects
        self.url = url
        self.cert = cert


async def fetch(
    session: aiohttp.ClientSession,
    connector: aiohttp.BaseConnector,
    *,
    method: str,
    url: URL,
    headers: dict[str, str],
    deadline: float,
    timeout: float,
    timing: Timing,
    ssl_context: ssl.SSLContext | bool,
    verified: bool,
    data: bytes | dict[str, str] | None = None,
    json_body: Any = None,
    follow_redirects: bool = True,
    max_body: int = MAX_BODY_BYTES,
) -> Reply:
    """Send one request and follow its redirects (credentials only to the origin of `url`); read
    the final body up to `max_body`. Ends by `deadline` (loop time; `timeout` is how the detail
    names it). Raises FetchFailed with the reason when there is no final response."""
    origin = _origin(url)
    if url.user is not None or url.password is not None:
        # The URL's user info goes as Basic auth (RFC 7617, UTF-8), a secret header like the others.
        pair = f"{url.user or ''}:{url.password or ''}".encode()
        headers = {**headers, "Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        url = url.with_user(None)
    # What other origins get: no credential at all (is_secret_header covers Authorization).
    elsewhere = {name: value for name, value in headers.items() if not is_secret_header(name)}
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    status: int | None = None
    redirects = 0
    cert: CertInfo | None = None
    token = tls.HANDSHAKE_STARTS.set(timing.handshakes)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            # A redirect URL with user info of its own gets only that (aiohttp sends it as
            # Basic auth; an Authorization header besides it would be refused).
            own_userinfo = url.user is not None or url.password is not None
            trusted = _origin(url) == origin and not own_userinfo
            async with session.request(
                method,
                url,
                headers=headers if trusted else elsewhere,
                data=data,
                json=json_body,
                ssl=ssl_context,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=remaining),
                trace_request_ctx=timing,
            ) as response:
                location = response.headers.get("Location") if response.status in REDIRECT_STATUSES else None
                if location is None or not follow_redirects:
                    status = response.status
                    body = await _read_bounded(response, max_body)
                    latency = (time.perf_counter() - started) * 1000
                    timing.close_hop()
                    cert = _peer_cert(timing, verified)  # the last response's, as blackbox_exporter reports it
                    return Reply(status, response.headers, body, _charset(response), url, redirects, latency, cert)
                hop_status = response.status
                response.release()
            timing.close_hop()
            cert = _peer_cert(timing, verified)
            redirects += 1
            if redirects >= MAX_REDIRECTS:
                raise FetchFailed("status", f"{redirects} redirects in a row (the last to {redact_url(location)})",
                                  status_code=hop_status, redirects=redirects, url=url, cert=cert)
            try:
                url = url.join(URL(location))
                _origin(url)
            except ValueError:
                raise FetchFailed("status", f"status {hop_status} redirects to an invalid URL {redact_url(location)!r}",
                                  status_code=hop_status, redirects=redirects, url=url, cert=cert) from None
            if url.scheme not in ("http", "https"):
                raise FetchFailed("status", f"status {hop_status} redirects to a non-HTTP URL {redact_url(str(url))!r}",
                                  status_code=hop_status, redirects=redirects, url=url, cert=cert)
            # RFC 9110 §15.4: 303 turns any method but HEAD into GET; 301/302 turn POST into GET
            # (and a request turned into GET leaves its body behind).
            if (hop_status == 303 and method != "HEAD") or (hop_status in (301, 302) and method == "POST"):
                method, data, json_body = "GET", None, None
    except FetchFailed:
        timing.close_hop()
        raise
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        timing.close_hop()
        cert = _peer_cert(timing, False) or cert
        raise FetchFailed("timeout", f"no complete response within {format_duration(timeout)}",
                          status_code=status, redirects=redirects, url=url, cert=cert) from None
    except Exception as exc:
        timing.close_hop()
        cert = _peer_cert(timing, False) or cert  # a chain refused in the handshake is still shown
        reason, detail = _reason(exc, connector)
        if reason is None:
            raise
        raise FetchFailed(reason, detail, status_code=status, redirects=redirects, url=url, cert=cert) from None
    finally:
        tls.HANDSHAKE_STARTS.reset(token)


def _reason(exc: Exception, connector: aiohttp.BaseConnector) -> tuple[str | None, str]:
    """The failure reason and detail for an exception of a request; (None, "") for a bug."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", _short(exc)
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError)):
        return "tls", tls.tls_problem(exc) or _short(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(connector, GuardedConnector) and connector.hop_blocked():
            # every address of this hop (the target, or the redirect being followed) was refused
            return "blocked", connector.describe_hop()
        problem = tls.tls_problem(exc)
        return ("tls", problem) if problem else ("connect", _short(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "body", f"unreadable body: {_short(exc)}"
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed response
        return "status", _short(exc)
    if isinstance(exc, (aiohttp.ClientError, OSError)):  # server hung up, connection reset, ...
        problem = tls.tls_problem(exc)
        return ("tls", problem) if problem else ("connect", _short(exc))
    return None, ""


def new_connector(guard: AddressGuard | None, resolver: aiohttp.abc.AbstractResolver | None) -> aiohttp.TCPConnector:
    # force_close + use_dns_cache=False on a connector of its own: a kept-alive connection or a
    # cached address would hide a DNS or connect failure that real clients would hit.
    options: dict[str, Any] = {"force_close": True, "use_dns_cache": False}
    if resolver is not None:
        options["resolver"] = resolver
    return GuardedConnector(guard, **options) if guard is not None else aiohttp.TCPConnector(**options)


# --- the prober -----------------------------------------------------------------------------


async def probe(
    check: HttpCheck,
    *,
    agent_id: str | None = None,
    guard: AddressGuard | None = None,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> ProbeResult:
    """Probe `check` (see `_probe`); the result's detail never shows the check's credentials."""
    result = await _probe(check, agent_id=agent_id, guard=guard, resolver=resolver)
    if result.detail:
        detail = redact_text(result.detail, secret_values(check.model_dump()))
        if detail != result.detail:
            result = dataclasses.replace(result, detail=detail)
    return result


async def _probe(
    check: HttpCheck,
    *,
    agent_id: str | None,
    guard: AddressGuard | None,
    resolver: aiohttp.abc.AbstractResolver | None,
) -> ProbeResult:
    """1. open a new connector (no pooled connection, no cached DNS answer: each probe sees the
    target as a new client would); 2. send the request, following redirects (credentials only to
    the check's own origin); 3. read the body (bounded); 4. judge the certificate's expiry, the
    status, then the body. The whole exchange, every redirect included, is bounded by
    `check.timeout`.

    With a `guard`, the connector refuses blocked addresses at connect time, on every redirect
    hop (agent/probers/guard.py). `resolver` replaces aiohttp's default name resolver (tests)."""
    timing = Timing()
    try:
        context = tls.client_context(check.tls_verify, check.tls_ca_file)
    except tls.CaFileError as exc:
        return ProbeResult.failure("tls", str(exc), phases=timing.seconds())
    connector = new_connector(guard, resolver)
    headers = {"User-Agent": user_agent(agent_id), **check.headers}
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession(connector=connector, trace_configs=[TRACE]) as session:
            reply = await fetch(
                session, connector, method=check.method, url=URL(check.url), headers=headers,
                deadline=loop.time() + check.timeout, timeout=check.timeout, timing=timing,
                ssl_context=context, verified=check.tls_verify,
            )
    except FetchFailed as failed:
        return ProbeResult.failure(
            failed.reason, failed.detail, status_code=failed.status_code, phases=timing.seconds(),
            final_url=str(failed.url) if failed.url is not None else None, redirects=failed.redirects, cert=failed.cert,
        )
    except Exception as exc:  # a bug here, not a down target
        # The traceback is logged redacted: its messages may quote the URL or a header.
        log.error(
            "http probe of %s (%s) failed unexpectedly:\n%s", check.name, redact_url(check.url),
            redact_text("".join(traceback.format_exception(exc)), secret_values(check.model_dump())).rstrip(),
        )
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")

    return judge_reply(check, reply, timing.seconds())


def judge_reply(check: Any, reply: Any, phases: dict) -> ProbeResult:
    """A reply that arrived, judged by the check: certificate expiry, status, body match. Shared
    by both HTTP clients (this one and http_lean), so that they fail for the same reasons."""
    status = reply.status
    details = {"status_code": status, "latency_ms": reply.latency_ms, "phases": phases,
               "final_url": str(reply.url), "redirects": reply.redirects, "cert": reply.cert}
    if reply.cert is not None:
        problem = tls.expiry_problem(reply.cert, check.min_cert_days)
        if problem is not None:
            return ProbeResult.failure("cert_expiry", problem, **details)
    if not check.accepts_status(status):
        wanted = check.expected_status if check.expected_status is not None else "2xx"
        return ProbeResult.failure("status", f"status {status} not in {wanted}", **details)
    if check.body_match is not None:
        text = reply.body.decode(reply.charset, errors="replace")
        if not re.search(check.body_match, text):
            return ProbeResult.failure(
                "body", f"body does not match {check.body_match!r} (first {len(reply.body)} bytes read)", **details,
            )
    latency = details.pop("latency_ms")
    return ProbeResult.success(latency, **details)


# --- helpers --------------------------------------------------------------------------------


def _peer_cert(timing: Timing, verified: bool) -> CertInfo | None:
    """The chain of the hop just closed, when it spoke TLS."""
    if timing.ssl_object is None:
        return None
    try:
        return tls.cert_info(timing.ssl_object, verified=verified)
    except Exception:  # an unreadable certificate must not cost the probe its result
        log.debug("cannot read a presented certificate", exc_info=True)
        return None


def _origin(url: URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: RFC 6454 §4."""
    if not url.host:
        raise ValueError(f"no host in {redact_url(str(url))!r}")
    return (url.scheme.lower(), url.host.lower(), url.port)


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _charset(response: aiohttp.ClientResponse) -> str:
    try:
        charset = response.charset or "utf-8"
        "".encode(charset)
        return charset
    except LookupError:
        return "utf-8"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
