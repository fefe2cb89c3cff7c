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
from collector.ingest import (
    batch_statement_of, check_batch, parse_batch, parse_signature, raise_conflicts, result_digests, verify_signature,
)
from evidence.canonical import SIGNATURE_HEADER
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
    signed = parse_signature(request.headers.get(SIGNATURE_HEADER))
    if signed is None and state.config.requires_signature(agent_id):
        raise RequestError(f"header {SIGNATURE_HEADER}: missing; agent {agent_id!r} must sign its batches "
                           "(require_signatures)", 401, reason="unsigned")
    # The statement is rebuilt from the values validated and stored, so what is verified is what
    # is kept (docs/evidence.md, "On the wire"); an unsigned batch has a statement too (prev null),
    # whose hash its log entry names.
    digests = result_digests(rows)
    async with state.sessionmaker() as session:
        if signed is not None and not state.config.requires_signature(agent_id):
            if not await store.agent_keys(session, agent_id):
                # An agent signs from its first start; until its operator registers the key, a
                # collector that does not require signatures takes its batches as unsigned ones
                # (logged with no key), said once, rather than refusing what it could not check.
                if agent_id not in state.unregistered_signers:
                    state.unregistered_signers.add(agent_id)
                    log.info("agent %s signs its batches with key %s, which is not registered: its batches are "
                             "kept as unsigned (register it with `uptime-collector agents add %s --public-key`)",
                             agent_id, signed[0], agent_id)
                signed = None
        key_id, prev, signature = signed if signed is not None else (None, None, None)
        statement, batch_hash = batch_statement_of(agent_id, prev, digests)
        if signed is not None:
            key = await store.agent_key(session, agent_id, key_id)
            verify_signature(agent_id, key_id, key.public_key if key else None, statement, signature)
        # The batch, its results, their links to it and its log entry: one transaction.
        kept = await store.add_batch(session, agent_id, batch_sha256=batch_hash, prev=prev, key_id=key_id,
                                     signature=signature, digests=digests, received_at=now)
        outcome = await store.insert_results(session, agent_id, rows, replica=state.instance_id, batch_id=kept.id)
        # A vote again in a slot refuses the batch whole: leaving the block without a commit
        # rolls back what the insert stored.
        raise_conflicts(outcome.conflicts)
        await store.touch_agent(session, agent_id, now)
        await store.log_batch(session, kept)
        await session.commit()
    # Only now, after the commit, is the batch acknowledged and evaluated.
    state.note_results(agent_id, rows)
    state.metrics.results.labels("accepted").inc(outcome.accepted)
    state.metrics.results.labels("duplicate").inc(outcome.duplicates)
    # the answer stays the wire protocol's: the agent knows its statement's hash (its next prev)
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
