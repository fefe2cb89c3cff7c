"""Agents: registered (a token shown once) and revoked by the admin, listed with their last contact."""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from collector import store
from collector.config import AGENT_ID_PATTERN, hash_token
from collector.errors import RequestError

from .common import STATE, json_response, read_json, require_admin, require_read


async def post_agent(request: web.Request) -> web.Response:
    """Register an agent or give it a new token (admin); the token is in this answer only."""
    require_admin(request)
    state = request.app[STATE]
    body = await read_json(request)
    agent_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(agent_id, str) or not re.match(AGENT_ID_PATTERN, agent_id):
        raise RequestError("id: an agent id of 1-64 characters A-Z a-z 0-9 . _ - is required", 422)
    token = secrets.token_urlsafe(32)
    async with state.sessionmaker() as session:
        new = await store.register_agent(session, agent_id, hash_token(token))
        await session.commit()
    return json_response({"id": agent_id, "token": token, "new": new}, status=201)

async def delete_agent(request: web.Request) -> web.Response:
    require_admin(request)
    state = request.app[STATE]
    agent_id = request.match_info["agent"]
    async with state.sessionmaker() as session:
        found = await store.revoke_agent(session, agent_id)
        await session.commit()
    if not found:
        raise RequestError(f"unknown agent {agent_id!r}", 404)
    return json_response({"id": agent_id, "revoked": True})

async def get_agents(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    async with state.sessionmaker() as session:
        rows = await store.list_agents(session)
    limit = state.config.max_clock_offset
    return json_response({"agents": [
        {"id": a.id, "active": a.revoked_at is None and a.token_sha256 is not None, "last_seen": a.last_seen,
         "clock_offset_seconds": a.clock_offset_seconds,
         # flagged: its rounds may not line up with the others' (max_clock_offset)
         "clock_skewed": a.clock_offset_seconds is not None and abs(a.clock_offset_seconds) > limit}
        for a in rows]})
