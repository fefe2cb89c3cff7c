"""Health, Prometheus metrics and the API's own OpenAPI description."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from .common import STATE, json_response, require_read
from .openapi import build_spec


async def get_metrics(request: web.Request) -> web.Response:
    require_read(request)  # with public_reads off, Prometheus scrapes with the admin token
    state = request.app[STATE]
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

async def get_openapi(request: web.Request) -> web.Response:
    return json_response(build_spec())

async def get_healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        async with state.sessionmaker() as session:
            await session.execute(select(1))
    except Exception:  # the health check reports, it does not raise
        return json_response({"status": "database unavailable"}, status=503)
    return json_response({"status": "ok"})
