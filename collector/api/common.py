"""What every handler of the API shares: the application's keys, JSON answers, timestamps in
query parameters, who is asking (an agent's token, the admin token) and reading a request's body."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from collector import store
from collector.config import admin_token_matches, hash_token
from collector.errors import RequestError
from collector.ratelimit import RateLimiter
from collector.service import CollectorState

STATE = web.AppKey("state", CollectorState)

LIMITER = web.AppKey("limiter", RateLimiter)

def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=_default))

def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

def parse_ts(value: str | None, field: str) -> datetime | None:
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

async def agent_from_token(request: web.Request) -> str:
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

def require_admin(request: web.Request) -> None:
    state = request.app[STATE]
    expected = state.config.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not admin_token_matches(token.strip() if scheme.lower() == "bearer" else "", expected):
        raise RequestError("admin token required", 401)

def require_read(request: web.Request) -> None:
    if not request.app[STATE].config.public_reads:
        require_admin(request)

async def read_json(request: web.Request) -> Any:
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

def policy_named(request: web.Request, name: str):
    state = request.app[STATE]
    policy = state.policies.get(name)
    if policy is None:
        raise RequestError(f"unknown policy {name!r} (configured: {', '.join(sorted(state.policies))})", 404)
    return policy
