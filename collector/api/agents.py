"""Agents: registered (a token shown once) and revoked by the admin, listed with their last contact;
their public keys registered (and logged) by the admin, listed for everyone (docs/evidence.md)."""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from collector import store
from collector.config import AGENT_ID_PATTERN, hash_token
from collector.errors import RequestError
from evidence.keys import BadKey

from .common import STATE, json_response, read_json, require_admin, require_read


async def post_agent(request: web.Request) -> web.Response:
    """Register an agent or give it a new token (admin); the token is in this answer only."""
    require_admin(request)
    state = request.app[STATE]
    body = await read_json(request)
    agent_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(agent_id, str) or not re.match(AGENT_ID_PATTERN, agent_id):
        raise RequestError("id: an agent id of 1-64 characters A-Z a-z 0-9 . _ - is required", 422)
    unknown = sorted(set(body) - {"id", "public_key"})
    if unknown:
        raise RequestError(f"{unknown[0]}: unknown field (an agent has id and optionally public_key)", 422)
    public_key = body.get("public_key")
    token = secrets.token_urlsafe(32)
    async with state.sessionmaker() as session:
        new = await store.register_agent(session, agent_id, hash_token(token))
        await session.flush()
        answer = {"id": agent_id, "token": token, "new": new}
        if public_key is not None:
            answer["key"] = key_of(await _register_key(session, agent_id, public_key))
        await session.commit()
    return json_response(answer, status=201)


def key_of(row) -> dict:
    return {"agent": row.agent_id, "key": row.public_key, "key_id": row.key_id, "registered_at": row.registered_at,
            "registered_by": row.registered_by, "log_index": row.log_index, "revoked_at": row.revoked_at,
            "revoked_log_index": row.revoked_log_index}


async def _register_key(session, agent_id: str, public_key):
    try:
        row, _ = await store.register_agent_key(session, agent_id, public_key, registered_by="api")
    except BadKey as err:
        raise RequestError(str(err), 422) from None
    except store.KeyConflict as err:
        raise RequestError(str(err), 409) from None
    return row


async def post_agent_key(request: web.Request) -> web.Response:
    """Register a public key of an existing agent (admin), logged as an `agent_key` entry; its
    token is left as it is. A new key is a rotation: the agent's earlier keys stay registered, so
    the batches they signed stay verifiable. 201 for a new key, 200 for one registered before."""
    require_admin(request)
    state = request.app[STATE]
    agent_id = request.match_info["agent"]
    body = await read_json(request)
    if not isinstance(body, dict) or "public_key" not in body:
        raise RequestError('public_key: required, "ed25519:<base64 of the 32-byte key>"', 422)
    unknown = sorted(set(body) - {"public_key"})
    if unknown:
        raise RequestError(f"{unknown[0]}: unknown field", 422)
    async with state.sessionmaker() as session:
        if await store.agent_exists(session, agent_id) is False:
            raise RequestError(f"unknown agent {agent_id!r}", 404)
        before = {k.public_key for k in await store.agent_keys(session, agent_id)}
        row = await _register_key(session, agent_id, body["public_key"])
        await session.commit()
    return json_response(key_of(row), status=200 if row.public_key in before else 201)


async def delete_agent_key(request: web.Request) -> web.Response:
    """Revoke one of the agent's keys (admin), logged as an `agent_key_revoked` entry: batches
    signed with it are refused from now on; the evidence it signed before stays verifiable. 404 for
    a key the agent does not have, 409 when it was revoked before (the first revocation stands)."""
    require_admin(request)
    state = request.app[STATE]
    agent_id, kid = request.match_info["agent"], request.match_info["key_id"]
    async with state.sessionmaker() as session:
        row, revoked = await store.revoke_agent_key(session, agent_id, kid)
        if row is None:
            raise RequestError(f"key_id: agent {agent_id!r} has no key {kid[:16]!r}", 404)
        if not revoked:
            raise RequestError(f"key_id: key {kid} of agent {agent_id!r} was already revoked", 409)
        await session.commit()
    return json_response(key_of(row))


async def get_agent_keys(request: web.Request) -> web.Response:
    """Every key the agent was registered with, oldest first, with its log index."""
    require_read(request)
    state = request.app[STATE]
    agent_id = request.match_info["agent"]
    async with state.sessionmaker() as session:
        if await store.agent_exists(session, agent_id) is False:
            raise RequestError(f"unknown agent {agent_id!r}", 404)
        rows = await store.agent_keys(session, agent_id)
    return json_response({"agent": agent_id, "keys": [key_of(r) for r in rows]})

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
