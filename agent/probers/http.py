"""HTTP(S) prober: one request over a fresh connection, judged by status and optionally body.

Failure reasons (wire-protocol.md): dns, connect, timeout, tls, status, body; `blocked` when the
agent's SSRF guard refused every address the target (or a redirect hop) resolved to (see
agent/probers/guard.py); `internal` only for a bug in this module, which is also logged with its
traceback.
"""
from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time

import aiohttp

from protocol.checks import HttpCheck
from protocol.durations import format_duration
from agent.probers.guard import AddressGuard, GuardedConnector
from agent.probers.result import ProbeResult

log = logging.getLogger(__name__)

# A health page fits easily; a larger body is read (and matched) only this far, so a probe of a
# big download costs bounded memory and its latency stays "time to a usable answer".
MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "uptime-agent/0.1 (synthetic probe)"


def user_agent(agent_id: str | None) -> str:
    """Names the vantage point, so the target's operators can tell which agent's request failed."""
    return f"uptime-agent/0.1 (synthetic probe; agent {agent_id})" if agent_id else USER_AGENT


async def probe(
    check: HttpCheck,
    *,
    agent_id: str | None = None,
    guard: AddressGuard | None = None,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> ProbeResult:
    """1. open a new connector (no pooled connection, no cached DNS answer: each probe sees the
    target as a new client would); 2. send the request; 3. read the body (bounded); 4. judge
    status, then body. The whole exchange is bounded by `check.timeout`.

    With a `guard`, the connector refuses blocked addresses at connect time, on every redirect
    hop (agent/probers/guard.py). `resolver` replaces aiohttp's default name resolver (tests)."""
    # force_close + use_dns_cache=False on a connector of its own: a kept-alive connection or a
    # cached address would hide a DNS or connect failure that real clients would hit.
    options = {"force_close": True, "use_dns_cache": False}
    if resolver is not None:
        options["resolver"] = resolver
    connector = GuardedConnector(guard, **options) if guard is not None else aiohttp.TCPConnector(**options)
    timeout = aiohttp.ClientTimeout(total=check.timeout)
    headers = {"User-Agent": user_agent(agent_id), **check.headers}
    started = time.perf_counter()
    status: int | None = None

    def elapsed_ms() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.request(
                check.method,
                check.url,
                headers=headers,
                ssl=True if check.tls_verify else False,  # True: verify against the system CAs
                allow_redirects=True,
            ) as response:
                status = response.status
                body = await _read_bounded(response, MAX_BODY_BYTES)
                latency = elapsed_ms()
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        return ProbeResult.failure(
            "timeout",
            f"no complete response within {format_duration(check.timeout)}",
            status_code=status,
        )
    except aiohttp.ClientConnectorDNSError as exc:
        return ProbeResult.failure("dns", _short(exc))
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError) as exc:
        return ProbeResult.failure("tls", _short(exc))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(connector, GuardedConnector) and connector.hop_blocked():
            # every address of this hop (the target, or the redirect being followed) was refused
            return ProbeResult.failure("blocked", connector.describe_hop(), status_code=status)
        return ProbeResult.failure("tls" if _caused_by_tls(exc) else "connect", _short(exc))
    except aiohttp.ClientPayloadError as exc:
        return ProbeResult.failure("body", f"unreadable body: {_short(exc)}", status_code=status)
    except aiohttp.ClientResponseError as exc:  # malformed response, redirect loop
        return ProbeResult.failure("status", _short(exc), status_code=status or exc.status or None)
    except (aiohttp.ClientError, OSError) as exc:  # server hung up, connection reset, ...
        return ProbeResult.failure("tls" if _caused_by_tls(exc) else "connect", _short(exc), status_code=status)
    except Exception as exc:  # a bug here, not a down target
        log.exception("http probe of %s (%s) failed unexpectedly", check.name, check.url)
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")

    if not check.accepts_status(status):
        wanted = check.expected_status if check.expected_status is not None else "2xx"
        return ProbeResult.failure(
            "status", f"status {status} not in {wanted}", latency_ms=latency, status_code=status
        )
    if check.body_match is not None:
        text = body.decode(_charset(response), errors="replace")
        if not re.search(check.body_match, text):
            return ProbeResult.failure(
                "body",
                f"body does not match {check.body_match!r} (first {len(body)} bytes read)",
                latency_ms=latency,
                status_code=status,
            )
    return ProbeResult.success(latency, status_code=status)


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


def _caused_by_tls(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ssl.SSLError):
            return True
        if isinstance(getattr(current, "os_error", None), ssl.SSLError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
