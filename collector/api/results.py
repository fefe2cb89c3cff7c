"""Agents' endpoints: a batch of results, a heartbeat, and the checks assigned to an agent."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone

from aiohttp import web
from pydantic import ValidationError

from collector import store
from collector.errors import RequestError, describe
from collector.db import Check
from collector.ingest import check_batch, parse_batch, raise_conflicts
from protocol.wire import Heartbeat
from collector.service import AgentContact

from .common import STATE, agent_from_token, json_response, read_json

log = logging.getLogger("uptime.collector.http")


async def post_results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await agent_from_token(request)
    batch = parse_batch(await read_json(request))
    if batch.agent != agent_id:
        raise RequestError(f"agent: this token belongs to {agent_id!r}, not {batch.agent!r}", 403, reason="identity")
    now = datetime.now(timezone.utc)
    rows = check_batch(batch, state.checks, now, removed=state.removed_checks,
                       max_age=timedelta(seconds=state.config.ingest.max_result_age),
                       max_skew=timedelta(seconds=state.config.ingest.max_future_skew),
                       intervals=await _intervals(state, {r.check for r in batch.results}))
    async with state.sessionmaker() as session:
        outcome = await store.insert_results(session, agent_id, rows, replica=state.instance_id)
        # A vote again in a slot refuses the batch whole: leaving the block without a commit
        # rolls back what the insert stored.
        raise_conflicts(outcome.conflicts)
        await store.touch_agent(session, agent_id, now)
        await session.commit()
    # Only now, after the commit, is the batch acknowledged and evaluated.
    state.note_results(agent_id, rows)
    state.metrics.results.labels("accepted").inc(outcome.accepted)
    state.metrics.results.labels("duplicate").inc(outcome.duplicates)
    return json_response({"accepted": outcome.accepted, "duplicates": outcome.duplicates})

async def _intervals(state, names: set[str]) -> dict[str, float]:
    """The interval of each named check, also of a removed one (its row stays in the database),
    so that ingest can hold every result's `started` to its own slot."""
    out = {name: state.checks[name].interval for name in names if name in state.checks}
    gone = [name for name in names if name not in out and name in state.removed_checks]
    if gone:
        async with state.sessionmaker() as session:
            for name in gone:
                row = await session.get(Check, name)
                if row is not None:
                    out[name] = row.interval_seconds
    return out


async def post_heartbeat(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await agent_from_token(request)
    try:
        beat = Heartbeat.model_validate(await read_json(request))
    except ValidationError as err:
        raise RequestError(describe(err), 422, reason="schema") from None
    if beat.agent != agent_id:
        raise RequestError(f"agent: this token belongs to {agent_id!r}, not {beat.agent!r}", 403, reason="identity")
    now = datetime.now(timezone.utc)
    async with state.sessionmaker() as session:
        await store.touch_agent(session, agent_id, now, beat.clock_offset_seconds)
        await session.commit()
    contact = state.agent_contact.setdefault(agent_id, AgentContact(now))
    contact.last_seen = now
    contact.clock_offset = beat.clock_offset_seconds
    if beat.clock_offset_seconds is not None and abs(beat.clock_offset_seconds) > state.config.max_clock_offset:
        log.warning("agent %s: clock offset %.3f s exceeds %.3f s; its rounds may not line up",
                    agent_id, beat.clock_offset_seconds, state.config.max_clock_offset)
    return json_response({"server_time": now})

async def get_assignments(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await agent_from_token(request)
    # a check without an `agents:` list is for every agent, also one registered with `agents add`
    checks = [c.prober_spec() for c in state.checks.values() if c.agents is None or agent_id in c.agents]
    body = json.dumps({"agent": agent_id, "checks": checks}, sort_keys=True)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(text=body, content_type="application/json", headers={"ETag": etag})
