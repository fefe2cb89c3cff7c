"""The API's middlewares: one turns every error into a JSON answer naming what was wrong (a
client's mistake is a 4xx, a database outage a 503, never a 500), one counts ingest requests by
the status code they were answered with, one slows failed token attempts and anonymous heavy
reads per client address, one gives every HTML page the browser's security headers."""

from __future__ import annotations

import logging
import math
from typing import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

from collector.config import CollectorConfig, admin_token_matches
from collector.errors import RequestError
from collector.metrics import THROTTLE_REASONS
from collector.ratelimit import RateLimiter
from collector.rules.offline import InputError
from collector.rules.policy import PolicyError

from .common import STATE, json_response

log = logging.getLogger("uptime.collector.http")

# Agents' endpoints: their refusals are counted by reason (uptime_collector_ingest_rejections_total).
AGENT_PATHS = frozenset({"/api/v1/results", "/api/v1/heartbeat", "/api/v1/assignments"})

@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except RequestError as err:
        metrics = request.app[STATE].metrics
        if err.reason is not None and request.path in AGENT_PATHS:
            metrics.rejections.labels(err.reason).inc()
        if err.reason in THROTTLE_REASONS:
            metrics.throttled.labels(err.reason).inc()
        for refused in err.extra.get("rejected", ()):
            metrics.refused.labels(refused["reason"]).inc()
        wait = err.extra.get("retry_after_seconds")
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else None
        response = json_response({"error": err.message, **err.extra}, status=err.status, headers=headers)
        if err.reason == "encoding":
            # the rest of a body that could not be decoded cannot be told from the next request
            response.force_close()
        return response
    except (PolicyError, InputError, ValueError) as err:
        # A user's input that the rules core refused: a 4xx naming what is wrong, never a 500.
        return json_response({"error": str(err)}, status=400)
    except OverflowError as err:
        # A JSON integer of hundreds of digits where a number of seconds is read (float() of it):
        # looking for such runs in every body would cost more than parsing it.
        return json_response({"error": f"request body: number too large ({err})"}, status=400)
    except web.HTTPException as exc:
        # The router's own 404/405/413 answer in JSON on the API too, naming what was wrong.
        if exc.status >= 400 and (request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")):
            message = {404: f"no such endpoint: {request.path}",
                       405: f"method {request.method} not allowed on {request.path}",
                       413: f"request body larger than {request.app[STATE].config.max_body_bytes} bytes"}.get(exc.status, exc.reason)
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return json_response({"error": message}, status=exc.status, headers=headers)
        raise
    except (OperationalError, DBAPIError, ConnectionError, OSError) as err:
        log.warning("database unavailable: %s", err.__class__.__name__)
        return json_response({"error": "database unavailable, retry later"}, status=503, headers={"Retry-After": "5"})

@web.middleware
async def ingest_count_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Ingest requests by the status code they were answered with (a 503 of a database outage
    included); outside the error middleware, so it sees the final answer."""
    response = await handler(request)
    if request.path == "/api/v1/results":
        request.app[STATE].metrics.requests.labels(str(response.status)).inc()
    return response


# Reads that compute a report, a claim or a page for whoever asks (collector.offload runs them in
# a worker): limited per client address for anonymous readers, so that one client cannot keep
# the workers to itself. Cheap reads (lists, /metrics, /healthz) are not limited.
HEAVY_READS = ("/api/v1/reports/", "/api/v1/claims/verify", "/policies/")


def _heavy_read(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and (request.path == "/" or request.path.startswith(HEAVY_READS))


def limits_middleware(config: CollectorConfig):
    """Per client address (`request.remote`, the peer of the connection: behind a reverse proxy,
    that is the proxy), two token buckets:

    1. failed token attempts (a request with a token answered 401): past `auth_failure_limit`,
       every request from that address that carries a token is answered 429 with Retry-After
       before its token is looked at, a correct one included; a guess made then tells nothing,
       so guessing is slowed to the bucket's refill rate. An agent behind the same address waits
       as for any 429 (its results stay spooled); an address that stops failing is free again
       within burst/rate seconds.
    2. anonymous heavy reads (`public_rate_limit`): reports, claims and pages without the admin
       token; past it, 429 with Retry-After.
    """
    failures = RateLimiter(config.auth_failure_limit.requests_per_second, config.auth_failure_limit.burst)
    reads = RateLimiter(config.public_rate_limit.requests_per_second, config.public_rate_limit.burst)

    @web.middleware
    async def limits(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        address = request.remote or "unknown"
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            wait = failures.wait(address)
            if wait > 0:
                raise RequestError(f"too many failed token attempts from {address}; retry in {math.ceil(wait)} s",
                                   429, reason="auth_rate_limit", retry_after_seconds=wait)
        if _heavy_read(request) and not _is_admin(authorization, config.admin_token):
            allowed, wait = reads.allow(address)
            if not allowed:
                raise RequestError(f"too many reports, claims or pages asked from {address}; retry in "
                                   f"{math.ceil(wait)} s", 429, reason="public_rate_limit", retry_after_seconds=wait)
        try:
            response = await handler(request)
        except RequestError as err:
            if err.status == 401 and authorization is not None:
                _failed(request, failures, address)
            raise
        if response.status == 401 and authorization is not None:  # a page's own 401
            _failed(request, failures, address)
        return response

    return limits


def _is_admin(authorization: str | None, expected: str | None) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and admin_token_matches(token.strip(), expected)


def _failed(request: web.Request, failures: RateLimiter, address: str) -> None:
    failures.allow(address)
    kind = "agent" if request.path in AGENT_PATHS else "admin"
    request.app[STATE].metrics.auth_failures.labels(kind).inc()


# What an HTML page may load and do (all it has is one inline stylesheet: no script, no image,
# no font, no frame): everything else refused by the browser, should anything ever slip into a page.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
HTML_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",  # report links carry policy names and periods: not for other sites
}


@web.middleware
async def security_headers_middleware(request: web.Request,
                                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every answer: X-Content-Type-Options nosniff (a JSON error is never run as a page); every
    HTML answer, the pages' own and aiohttp's (a redirect, an error page): the headers above."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc)
        raise
    _secure(response)
    return response


def _secure(response: web.StreamResponse) -> None:
    if response.prepared:  # already sent (a stream): too late for headers
        return
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "text/html":
        for name, value in HTML_SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
