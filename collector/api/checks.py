"""Checks: listed for everyone, created, replaced and removed by the admin; agents take changes up at their next poll."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from collector import store
from collector.checks import CheckError, check_policies_allow, entry_json, parse_check, row_of
from collector.db import Check
from collector.errors import RequestError
from collector.service import CollectorState
from protocol.redact import redact_check

from .common import STATE, json_response, read_json, require_admin, require_read

log = logging.getLogger("uptime.collector.http")


def check_json(state: CollectorState, name: str) -> dict[str, Any]:
    """A check as every reader sees it, admin included: credentials redacted (protocol/redact.py).
    Only the agents a check is assigned to get it in full (GET /api/v1/assignments)."""
    return {**redact_check(entry_json(state.checks[name])), "source": state.check_sources.get(name, "config"),
            "updated_at": state.check_updated.get(name)}

async def get_checks(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    return json_response({"checks": [check_json(state, name) for name in sorted(state.checks)],
                  "removed": [{"name": n, "removed_at": t} for n, t in sorted(state.removed_checks.items())]})

async def get_check(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    if name not in state.checks:
        raise RequestError(f"unknown check {name!r}", 404)
    return json_response(check_json(state, name))

async def put_check(request: web.Request) -> web.Response:
    """Create or replace a check (admin). Agents pick it up at their next assignments poll: a
    changed check's schedule is replaced, a new one starts. 201 if new, 200 if replaced."""
    require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    body = await read_json(request)
    try:
        async with state.sessionmaker() as session:
            agents = [a.id for a in await store.list_agents(session) if a.revoked_at is None]
        entry = parse_check(name, body, agents=agents)
        if name in state.contract_entries:
            raise CheckError(f"name: {name!r} is already the name of a policy")
        check_policies_allow(entry, state.contracts, state.checks)
    except CheckError as err:
        raise RequestError(err.message, err.status) from None
    async with state.sessionmaker() as session:
        created = await store.put_provisioned(session, Check, row_of(entry, state.config))
        await session.commit()
    await state.reload_checks(force=True)
    log.info("check %s %s through the API", name, "created" if created else "replaced")
    return json_response(check_json(state, name), status=201 if created else 200)

async def delete_check(request: web.Request) -> web.Response:
    """Remove a check (admin): agents stop probing it; its results and windows stay evidence."""
    require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    if name not in state.checks:
        raise RequestError(f"unknown check {name!r}", 404)
    users = [p.name for p in state.contracts if name in p.components]
    if users:
        raise RequestError(f"check {name!r} is a component of policy {', '.join(users)}; "
                           "take it out of the policy first", 409)
    async with state.sessionmaker() as session:
        row = await store.remove_provisioned(session, Check, name)
        await session.commit()
    if row is None:  # removed meanwhile through another replica
        raise RequestError(f"unknown check {name!r}", 404)
    await state.reload_checks(force=True)
    log.info("check %s removed through the API", name)
    return json_response({"name": name, "removed_at": row.removed_at})
