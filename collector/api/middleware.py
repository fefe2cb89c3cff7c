"""The API's middlewares: one turns every error into a JSON answer naming what was wrong (a
client's mistake is a 4xx, a database outage a 503, never a 500), one counts ingest requests by
the status code they were answered with."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

from collector.errors import RequestError
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
        for refused in err.extra.get("rejected", ()):
            metrics.refused.labels(refused["reason"]).inc()
        headers = {"Retry-After": str(max(1, round(err.extra["retry_after_seconds"])))} if err.status == 429 else None
        return json_response({"error": err.message, **err.extra}, status=err.status, headers=headers)
    except (PolicyError, InputError, ValueError) as err:
        # A user's input that the rules core refused: a 4xx naming what is wrong, never a 500.
        return json_response({"error": str(err)}, status=400)
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
