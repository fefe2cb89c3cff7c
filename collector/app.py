"""The collector's HTTP application: `create_app(state)` with its routes and one error middleware."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from collector import store
from collector.config import hash_token
from collector.ingest import Heartbeat, RequestError, check_batch, describe, parse_batch
from collector.migrate import upgrade_async
from collector.rules.offline import InputError
from collector.rules.periods import month_bounds
from collector.rules.policy import PolicyError
from collector.service import AgentContact, CollectorState

log = logging.getLogger("uptime.collector.http")

STATE = web.AppKey("state", CollectorState)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except RequestError as err:
        return _json({"error": err.message, **err.extra}, status=err.status)
    except (PolicyError, InputError, ValueError) as err:
        # A user's input that the rules core refused: a 4xx naming what is wrong, never a 500.
        return _json({"error": str(err)}, status=400)
    except web.HTTPException:
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
    return moment.astimezone(timezone.utc)


async def _agent_from_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RequestError("missing bearer token", 401)
    state = request.app[STATE]
    async with state.sessionmaker() as session:
        agent = await store.agent_by_token_hash(session, hash_token(token.strip()))
    if agent is None:
        state.metrics.rejections.labels("token").inc()
        raise RequestError("unknown or revoked token", 401)
    return agent.id


def _require_admin(request: web.Request) -> None:
    state = request.app[STATE]
    expected = state.config.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise RequestError("admin token required", 401)


def _require_read(request: web.Request) -> None:
    if not request.app[STATE].config.public_reads:
        _require_admin(request)


async def _read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body larger than {request.app[STATE].config.max_body_bytes} bytes", 413) from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"request body is not JSON: {err}") from None


async def post_results(request: web.Request) -> web.Response:
    state = request.app[STATE]
    status = 500
    try:
        agent_id = await _agent_from_token(request)
        batch = parse_batch(await _read_json(request))
        if batch.agent != agent_id:
            state.metrics.rejections.labels("identity").inc()
            raise RequestError(f"agent: this token belongs to {agent_id!r}, not {batch.agent!r}", 403)
        now = datetime.now(timezone.utc)
        known = {name: c.interval for name, c in state.checks.items()}
        try:
            rows = check_batch(batch, known, now)
        except RequestError:
            state.metrics.rejections.labels("invalid").inc()
            raise
        async with state.sessionmaker() as session:
            outcome = await store.insert_results(session, agent_id, rows)
            await store.touch_agent(session, agent_id, now)
            await session.commit()
        # Only now, after the commit, is the batch acknowledged and evaluated.
        state.note_results(agent_id, rows)
        state.metrics.results.labels("accepted").inc(outcome.accepted)
        state.metrics.results.labels("duplicate").inc(outcome.duplicates)
        status = 200
        return _json({"accepted": outcome.accepted, "duplicates": outcome.duplicates})
    except RequestError as err:
        status = err.status
        raise
    finally:
        state.metrics.requests.labels(str(status)).inc()


async def post_heartbeat(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await _agent_from_token(request)
    try:
        beat = Heartbeat.model_validate(await _read_json(request))
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None
    if beat.agent != agent_id:
        raise RequestError(f"agent: this token belongs to {agent_id!r}, not {beat.agent!r}", 403)
    now = datetime.now(timezone.utc)
    async with state.sessionmaker() as session:
        await store.touch_agent(session, agent_id, now, beat.clock_offset_seconds)
        await session.commit()
    contact = state.agent_contact.setdefault(agent_id, AgentContact(now))
    contact.last_seen = now
    contact.clock_offset = beat.clock_offset_seconds
    return _json({"server_time": now})


async def get_assignments(request: web.Request) -> web.Response:
    state = request.app[STATE]
    agent_id = await _agent_from_token(request)
    checks = [c.prober_spec() for c in state.config.checks if agent_id in state.config.agents_of(c)]
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


def _expected(state: CollectorState, policy) -> dict[str, list[str]]:
    return {c: state.config.agents_of(state.checks[c]) for c in policy.components if c in state.checks}


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
        report = await report_from_db(session, policy, period, expected_by_component=_expected(state, policy))
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
        claim = await claim_from_db(session, policy, start, end, expected_by_component=_expected(state, policy))
    return _json(claim)


async def get_policies(request: web.Request) -> web.Response:
    _require_read(request)
    state = request.app[STATE]
    open_windows = state.evaluator.open_windows()
    return _json({"policies": [
        {"name": name, "components": p.components, "interval_seconds": p.interval,
         "min_duration_seconds": p.min_duration, "policy_hash": p.content_hash(),
         "outage_open_since": open_windows.get(name)}
        for name, p in sorted(state.policies.items())
    ]})


async def get_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        async with state.sessionmaker() as session:
            await session.execute(select(1))
    except Exception:  # the health check reports, it does not raise
        return _json({"status": "database unavailable"}, status=503)
    return _json({"status": "ok"})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/results", post_results)
    app.router.add_post("/api/v1/heartbeat", post_heartbeat)
    app.router.add_get("/api/v1/assignments", get_assignments)
    app.router.add_get("/api/v1/outages", get_outages)
    app.router.add_get("/api/v1/policies", get_policies)
    app.router.add_get("/api/v1/reports/{policy}", get_report)
    app.router.add_get("/api/v1/claims/verify", get_claim)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)


async def _lifecycle(app: web.Application):
    """Migrate, sync the config into the database, evaluate periodically; undo it all on exit."""
    state = app[STATE]
    await upgrade_async(state.config.database_url)
    await state.sync_config()
    scheduler = AsyncIOScheduler(timezone=timezone.utc)

    async def evaluate() -> None:
        with state.metrics.evaluation_seconds.time():
            await state.evaluator.tick()

    scheduler.add_job(evaluate, "interval", seconds=state.config.evaluation.interval,
                      max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc))
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)
    await state.engine.dispose()


def create_app(state: CollectorState) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=state.config.max_body_bytes)
    app[STATE] = state
    setup_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app
