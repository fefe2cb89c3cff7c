"""Contract policies: listed for everyone, created, replaced and removed by the admin."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from collector import store
from collector.checks import CheckError, entry_json, parse_policy
from collector.db import ContractPolicy
from collector.errors import RequestError
from collector.service import CollectorState

from .common import STATE, json_response, read_json, require_admin, require_read

log = logging.getLogger("uptime.collector.http")


async def get_policies(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    open_windows = state.evaluator.open_windows()  # once, not once a policy
    return json_response({"policies": [policy_json(state, name, open_windows) for name in sorted(state.policies)]})

def policy_json(state: CollectorState, name: str, open_windows: dict[str, datetime | None] | None = None) -> dict[str, Any]:
    p = state.policies[name]
    entry = state.contract_entries.get(name)
    open_windows = open_windows if open_windows is not None else state.evaluator.open_windows()
    return {"name": name, "components": p.components, "interval_seconds": p.interval,
            "min_duration_seconds": p.min_duration, "policy_hash": p.content_hash(),
            "outage_open_since": open_windows.get(name),
            "kind": "check" if name in state.checks else "contract",
            "source": state.check_sources.get(name) if name in state.checks else state.policy_sources.get(name),
            **({"preset": entry.preset} if entry is not None else {})}

async def put_policy(request: web.Request) -> web.Response:
    """Create or replace a contract policy (admin): a shipped preset applied to checks in force.
    Its windows are judged from now on; earlier windows of a replaced policy stay as judged."""
    require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    try:
        entry, _policy = parse_policy(name, await read_json(request), checks=state.checks)
    except CheckError as err:
        raise RequestError(err.message, err.status) from None
    async with state.sessionmaker() as session:
        created = await store.put_provisioned(session, ContractPolicy, {"name": name, "entry": entry_json(entry)})
        await session.commit()
    await state.reload_checks(force=True)
    log.info("policy %s %s through the API", name, "created" if created else "replaced")
    return json_response(policy_json(state, name), status=201 if created else 200)

async def delete_policy(request: web.Request) -> web.Response:
    """Remove a contract policy (admin): no longer evaluated; its windows and maintenance stay."""
    require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    if name in state.checks:
        raise RequestError(f"{name!r} is the policy of check {name!r}; remove the check instead", 409)
    if name not in state.contract_entries:
        raise RequestError(f"unknown policy {name!r}", 404)
    async with state.sessionmaker() as session:
        row = await store.remove_provisioned(session, ContractPolicy, name)
        await session.commit()
    if row is None:
        raise RequestError(f"unknown policy {name!r}", 404)
    await state.reload_checks(force=True)
    log.info("policy %s removed through the API", name)
    return json_response({"name": name, "removed_at": row.removed_at})
