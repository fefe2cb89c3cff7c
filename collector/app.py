"""The collector's HTTP application: `create_app(state)` with its routes and one error middleware."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from collector import store
from collector.checks import CheckError, check_policies_allow, entry_json, parse_check, parse_policy, row_of
from collector.db import Check, ContractPolicy
from collector.config import AGENT_ID_PATTERN, admin_token_matches, hash_token
from collector.ingest import Heartbeat, RequestError, check_batch, describe, parse_batch
from collector.migrate import upgrade_async
from collector.ratelimit import RateLimiter
from collector.rules.offline import InputError
from collector.rules.periods import month_bounds
from collector.rules.policy import PolicyError
from collector.service import AgentContact, CollectorState
from collector.status import setup_status_routes

log = logging.getLogger("uptime.collector.http")

STATE = web.AppKey("state", CollectorState)
LIMITER = web.AppKey("limiter", RateLimiter)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
        return _json({"error": err.message, **err.extra}, status=err.status, headers=headers)
    except (PolicyError, InputError, ValueError) as err:
        # A user's input that the rules core refused: a 4xx naming what is wrong, never a 500.
        return _json({"error": str(err)}, status=400)
    except web.HTTPException as exc:
        # The router's own 404/405/413 answer in JSON on the API too, naming what was wrong.
        if exc.status >= 400 and (request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")):
            message = {404: f"no such endpoint: {request.path}",
                       405: f"method {request.method} not allowed on {request.path}",
                       413: f"request body larger than {request.app[STATE].config.max_body_bytes} bytes"}.get(exc.status, exc.reason)
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _json({"error": message}, status=exc.status, headers=headers)
        raise
    except (OperationalError, DBAPIError, ConnectionError, OSError) as err:
        log.warning("database unavailable: %s", err.__class__.__name__)
        return _json({"error": "database unavailable, retry later"}, status=503, headers={"Retry-After": "5"})


def _parse_ts(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(f"query parameter {field!r}: {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise RequestError(f"query parameter {field!r}: {value!r} has no UTC offset")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise RequestError(f"query parameter {field!r}: {value!r} is out of range") from None


async def _agent_from_token(request: web.Request) -> str:
    """The agent a bearer token belongs to (looked up on every request, so a revocation takes
    effect at once), after that agent's rate limit."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RequestError("missing bearer token", 401, reason="token")
    state = request.app[STATE]
    async with state.sessionmaker() as session:
        agent = await store.agent_by_token_hash(session, hash_token(token.strip()))
    if agent is None:
        raise RequestError("unknown or revoked token", 401, reason="token")
    allowed, wait = request.app[LIMITER].allow(agent.id)
    if not allowed:
        raise RequestError(f"rate limit of agent {agent.id!r} exceeded; retry later", 429, reason="rate_limit",
                           retry_after_seconds=round(wait, 3))
    return agent.id


def _require_admin(request: web.Request) -> None:
    state = request.app[STATE]
    expected = state.config.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not admin_token_matches(token.strip() if scheme.lower() == "bearer" else "", expected):
        raise RequestError("admin token required", 401)


def _require_read(request: web.Request) -> None:
    if not request.app[STATE].config.public_reads:
        _require_admin(request)


async def _read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body larger than {request.app[STATE].config.max_body_bytes} bytes", 413,
                           reason="too_large") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"request body is not JSON: {err}", reason="not_json") from None
    except RecursionError:
        raise RequestError("request body is nested too deeply", reason="not_json") from None
    # JSON carries U+0000 only escaped: look for the escape first (C speed), walk only then
    where = _nul_in(data) if b"\\u0000" in raw else None
    if where is not None:
        # PostgreSQL cannot store U+0000 in text: refused here, by field, rather than a 503 that an
        # agent would retry for ever
        raise RequestError(f"{where or 'body'}: contains a NUL character (\\u0000)", 422, reason="schema")
    return data


def _nul_in(data: Any) -> str | None:
    """The location of the first string (value or key) holding U+0000, else None."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    return path
                stack.append((path, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


@web.middleware
async def ingest_count_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Ingest requests by the status code they were answered with (a 503 of a database outage
    included); outside the error middleware, so it sees the final answer."""
    response = await handler(request)
    if request.path == "/api/v1/results":
        request.app[STATE].metrics.requests.labels(str(response.status)).inc()
    return response


async def post_results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await _agent_from_token(request)
    batch = parse_batch(await _read_json(request))
    if batch.agent != agent_id:
        raise RequestError(f"agent: this token belongs to {agent_id!r}, not {batch.agent!r}", 403, reason="identity")
    now = datetime.now(timezone.utc)
    rows = check_batch(batch, state.checks, now, removed=state.removed_checks,
                       max_age=timedelta(seconds=state.config.ingest.max_result_age),
                       max_skew=timedelta(seconds=state.config.ingest.max_future_skew))
    async with state.sessionmaker() as session:
        outcome = await store.insert_results(session, agent_id, rows, replica=state.instance_id)
        await store.touch_agent(session, agent_id, now)
        await session.commit()
    # Only now, after the commit, is the batch acknowledged and evaluated.
    state.note_results(agent_id, rows)
    state.metrics.results.labels("accepted").inc(outcome.accepted)
    state.metrics.results.labels("duplicate").inc(outcome.duplicates)
    return _json({"accepted": outcome.accepted, "duplicates": outcome.duplicates})


async def post_heartbeat(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await _agent_from_token(request)
    try:
        beat = Heartbeat.model_validate(await _read_json(request))
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
    return _json({"server_time": now})


async def get_assignments(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await _agent_from_token(request)
    # a check without an `agents:` list is for every agent, also one registered with `agents add`
    checks = [c.prober_spec() for c in state.checks.values() if c.agents is None or agent_id in c.agents]
    body = json.dumps({"agent": agent_id, "checks": checks}, sort_keys=True)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(text=body, content_type="application/json", headers={"ETag": etag})


def window_json(w: Any, now: datetime) -> dict[str, Any]:
    end = w.end
    minutes = ((end or now) - w.start).total_seconds() / 60
    return {
        "policy": w.policy,
        "start": w.start,
        "end": end,
        "open": end is None,
        "minutes": round(minutes, 3),
        "rule_hash": w.rule_hash,
        "evidence": w.evidence,
    }


async def get_outages(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    q = request.query
    policy = q.get("policy") or q.get("check")
    if policy is not None and policy not in state.policies:
        raise RequestError(f"query parameter 'policy': unknown policy {policy!r}", 404)
    since = _parse_ts(q.get("since"), "since")
    until = _parse_ts(q.get("until"), "until")
    open_only = q.get("open", "").lower() in ("1", "true", "yes")
    async with state.sessionmaker() as session:
        rows = await store.load_windows(session, policy, since, until, open_only)
    now = datetime.now(timezone.utc)
    return _json({"outages": [window_json(w, now) for w in rows]})


def _policy(request: web.Request, name: str):
    state = request.app[STATE]
    policy = state.policies.get(name)
    if policy is None:
        raise RequestError(f"unknown policy {name!r} (configured: {', '.join(sorted(state.policies))})", 404)
    return policy


async def get_report(request: web.Request) -> web.Response:
    _require_read(request)
    from collector.reporting import report_from_db

    state = request.app[STATE]
    policy = _policy(request, request.match_info["policy"])
    period = request.query.get("period") or datetime.now(timezone.utc).strftime("%Y-%m")
    try:
        month_bounds(period, policy.timezone)
    except ValueError as err:
        raise RequestError(f"query parameter 'period': {err}") from None
    async with state.sessionmaker() as session:
        report = await report_from_db(session, policy, period, expected_by_component=state.expected_by_component(policy))
    return _json(report)


async def get_claim(request: web.Request) -> web.Response:
    _require_read(request)
    from collector.reporting import claim_from_db

    state = request.app[STATE]
    q = request.query
    if "policy" not in q:
        raise RequestError("query parameter 'policy' is required")
    policy = _policy(request, q["policy"])
    start = _parse_ts(q.get("start"), "start")
    end = _parse_ts(q.get("end"), "end")
    if start is None or end is None:
        raise RequestError("query parameters 'start' and 'end' are required (RFC 3339)")
    if end <= start:
        raise RequestError("query parameter 'end': must be after 'start'")
    async with state.sessionmaker() as session:
        claim = await claim_from_db(session, policy, start, end, expected_by_component=state.expected_by_component(policy))
    return _json(claim)


async def get_policies(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    open_windows = state.evaluator.open_windows()  # once, not once a policy
    return _json({"policies": [policy_json(state, name, open_windows) for name in sorted(state.policies)]})


async def get_metrics(request: web.Request) -> web.Response:
    _require_read(request)  # with public_reads off, Prometheus scrapes with the admin token
    state = request.app[STATE]
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_openapi(request: web.Request) -> web.Response:
    from collector.openapi import build_spec

    return _json(build_spec())


async def get_healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        async with state.sessionmaker() as session:
            await session.execute(select(1))
    except Exception:  # the health check reports, it does not raise
        return _json({"status": "database unavailable"}, status=503)
    return _json({"status": "ok"})


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("announced", "start", "end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        try:
            return v.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    policy: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=32)
    announced: AwareDatetime
    start: AwareDatetime
    end: AwareDatetime
    note: str = Field(default="", max_length=2000)


async def post_maintenance(request: web.Request) -> web.Response:
    """Announce maintenance for a policy (admin). It is judged against the contract's rules in
    every report; a kind the policy does not accept is refused here already."""
    _require_admin(request)
    state = request.app[STATE]
    try:
        m = MaintenanceIn.model_validate(await _read_json(request))
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    policy = _policy(request, m.policy)
    if m.kind not in policy.maintenance:
        accepted = ", ".join(sorted(policy.maintenance)) or "none"
        raise RequestError(f"kind: policy {m.policy!r} accepts no maintenance of kind {m.kind!r} (accepted: {accepted})", 422)
    if m.end <= m.start:
        raise RequestError("end: must be after start", 422)
    utc = timezone.utc
    async with state.sessionmaker() as session:
        row = await store.add_maintenance(session, m.policy, m.kind, m.announced.astimezone(utc),
                                          m.start.astimezone(utc), m.end.astimezone(utc), m.note)
        await session.commit()
    return _json({"id": row.id, "policy": row.policy, "kind": row.kind, "announced": row.announced,
                  "start": row.start, "end": row.end, "note": row.note}, status=201)


async def get_maintenance(request: web.Request) -> web.Response:
    _require_read(request)
    from collector.reporting import load_maintenance

    state = request.app[STATE]
    policy = _policy(request, request.query.get("policy", ""))
    async with state.sessionmaker() as session:
        rows = await load_maintenance(session, policy.name)
    return _json({"maintenance": [r.to_dict() for r in rows]})


async def post_agent(request: web.Request) -> web.Response:
    """Register an agent or give it a new token (admin); the token is in this answer only."""
    _require_admin(request)
    state = request.app[STATE]
    body = await _read_json(request)
    agent_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(agent_id, str) or not re.match(AGENT_ID_PATTERN, agent_id):
        raise RequestError("id: an agent id of 1-64 characters A-Z a-z 0-9 . _ - is required", 422)
    token = secrets.token_urlsafe(32)
    async with state.sessionmaker() as session:
        new = await store.register_agent(session, agent_id, hash_token(token))
        await session.commit()
    return _json({"id": agent_id, "token": token, "new": new}, status=201)


async def delete_agent(request: web.Request) -> web.Response:
    _require_admin(request)
    state = request.app[STATE]
    agent_id = request.match_info["agent"]
    async with state.sessionmaker() as session:
        found = await store.revoke_agent(session, agent_id)
        await session.commit()
    if not found:
        raise RequestError(f"unknown agent {agent_id!r}", 404)
    return _json({"id": agent_id, "revoked": True})


async def get_agents(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    async with state.sessionmaker() as session:
        rows = await store.list_agents(session)
    limit = state.config.max_clock_offset
    return _json({"agents": [
        {"id": a.id, "active": a.revoked_at is None and a.token_sha256 is not None, "last_seen": a.last_seen,
         "clock_offset_seconds": a.clock_offset_seconds,
         # flagged: its rounds may not line up with the others' (max_clock_offset)
         "clock_skewed": a.clock_offset_seconds is not None and abs(a.clock_offset_seconds) > limit}
        for a in rows]})


def check_json(state: CollectorState, name: str) -> dict[str, Any]:
    return {**entry_json(state.checks[name]), "source": state.check_sources.get(name, "config"),
            "updated_at": state.check_updated.get(name)}


async def get_checks(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    return _json({"checks": [check_json(state, name) for name in sorted(state.checks)],
                  "removed": [{"name": n, "removed_at": t} for n, t in sorted(state.removed_checks.items())]})


async def get_check(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    if name not in state.checks:
        raise RequestError(f"unknown check {name!r}", 404)
    return _json(check_json(state, name))


async def put_check(request: web.Request) -> web.Response:
    """Create or replace a check (admin). Agents pick it up at their next assignments poll: a
    changed check's schedule is replaced, a new one starts. 201 if new, 200 if replaced."""
    _require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    body = await _read_json(request)
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
    return _json(check_json(state, name), status=201 if created else 200)


async def delete_check(request: web.Request) -> web.Response:
    """Remove a check (admin): agents stop probing it; its results and windows stay evidence."""
    _require_admin(request)
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
    return _json({"name": name, "removed_at": row.removed_at})


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
    _require_admin(request)
    state = request.app[STATE]
    name = request.match_info["name"]
    try:
        entry, _policy = parse_policy(name, await _read_json(request), checks=state.checks)
    except CheckError as err:
        raise RequestError(err.message, err.status) from None
    async with state.sessionmaker() as session:
        created = await store.put_provisioned(session, ContractPolicy, {"name": name, "entry": entry_json(entry)})
        await session.commit()
    await state.reload_checks(force=True)
    log.info("policy %s %s through the API", name, "created" if created else "replaced")
    return _json(policy_json(state, name), status=201 if created else 200)


async def delete_policy(request: web.Request) -> web.Response:
    """Remove a contract policy (admin): no longer evaluated; its windows and maintenance stay."""
    _require_admin(request)
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
    return _json({"name": name, "removed_at": row.removed_at})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/results", post_results)
    app.router.add_post("/api/v1/heartbeat", post_heartbeat)
    app.router.add_get("/api/v1/assignments", get_assignments)
    app.router.add_get("/api/v1/outages", get_outages)
    app.router.add_get("/api/v1/policies", get_policies)
    app.router.add_put("/api/v1/policies/{name}", put_policy)
    app.router.add_delete("/api/v1/policies/{name}", delete_policy)
    app.router.add_post("/api/v1/maintenance", post_maintenance)
    app.router.add_get("/api/v1/maintenance", get_maintenance)
    app.router.add_get("/api/v1/checks", get_checks)
    app.router.add_get("/api/v1/checks/{name}", get_check)
    app.router.add_put("/api/v1/checks/{name}", put_check)
    app.router.add_delete("/api/v1/checks/{name}", delete_check)
    app.router.add_get("/api/v1/agents", get_agents)
    app.router.add_post("/api/v1/agents", post_agent)
    app.router.add_delete("/api/v1/agents/{agent}", delete_agent)
    app.router.add_get("/api/v1/reports/{policy}", get_report)
    app.router.add_get("/api/v1/claims/verify", get_claim)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/api/v1/openapi.json", get_openapi)
    setup_status_routes(app)


async def _lifecycle(app: web.Application):
    """Migrate, sync the config into the database, run the periodic jobs; undo it all on exit.

    Evaluation and retention run on one replica at a time (the holder of their lease); status
    gauges and notification delivery run on every replica (delivery claims row by row)."""
    state = app[STATE]
    await upgrade_async(state.config.database_url)
    await state.sync_config()
    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    running: set[asyncio.Task] = set()

    def tracked(job):
        # Jobs are tracked so that shutdown waits for them before the engine is disposed.
        async def run() -> None:
            task = asyncio.current_task()
            running.add(task)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failing job is logged and tried again at its next run
                log.exception("periodic job %s failed", job.__name__)
            finally:
                running.discard(task)
        run.__name__ = job.__name__
        return run

    async def evaluate() -> None:
        await state.reload_checks()  # checks changed through another replica's API
        now = datetime.now(timezone.utc)
        if await state.hold_lease("evaluation", now):
            with state.metrics.evaluation_seconds.time():
                await state.evaluator.scan_received(now)
                await state.evaluator.tick(now)
        else:
            state.evaluator.lost_lead()
            await state.evaluator.refresh_open_windows()

    async def refresh_status() -> None:
        await state.refresh_contacts()
        await state.refresh_status()

    async def deliver() -> None:
        await state.deliverer.run_once()

    async def retention() -> None:
        if await state.hold_lease("retention", datetime.now(timezone.utc), ttl=state.config.retention.interval * 2):
            await state.expire_raw_results()

    now = datetime.now(timezone.utc)
    every = {
        evaluate: state.config.evaluation.interval,
        refresh_status: state.config.evaluation.status_interval,
        deliver: 1.0,
        retention: state.config.retention.interval,
    }
    for job, seconds in every.items():
        scheduler.add_job(tracked(job), "interval", seconds=seconds, max_instances=1, coalesce=True, next_run_time=now)
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
    for task in list(running):
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await state.release_leases()
    await state.deliverer.close()
    await state.engine.dispose()


def create_app(state: CollectorState) -> web.Application:
    app = web.Application(middlewares=[ingest_count_middleware, error_middleware], client_max_size=state.config.max_body_bytes)
    app[STATE] = state
    app[LIMITER] = RateLimiter(state.config.rate_limit.requests_per_second, state.config.rate_limit.burst)
    setup_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app
