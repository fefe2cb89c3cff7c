"""What every handler of the API shares: the application's keys, JSON answers, timestamps in
query parameters, who is asking (an agent's token, the admin token) and reading a request's body."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

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
    if not expected:
        # no token can match: say why, rather than let the operator guess at the one they sent
        raise RequestError("no admin_token is configured on this collector: set admin_token in its config "
                           "to use admin actions", 401)
    if not admin_token_matches(token.strip() if scheme.lower() == "bearer" else "", expected):
        raise RequestError("admin token required", 401)


def require_read(request: web.Request) -> None:
    if not request.app[STATE].config.public_reads:
        require_admin(request)

# The content codings aiohttp decodes before a handler reads the body (RFC 9110 §8.4.1; br and
# zstd only with their libraries installed, else aiohttp answers 400 itself). Any other value,
# a list of codings included, would reach the JSON parser still encoded: refused by name.
DECODED_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})
# Python refuses to convert longer integers (sys.get_int_max_str_digits, CVE-2020-10735).
_LONG_NUMBER = re.compile(r"-?\d{4301,}")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: UTF-8 only (RFC 8259 §8.1), numbers only as JSON has them (no
    NaN or Infinity, RFC 8259 §6), no NUL character in any string. Every refusal is a 4xx that
    names the problem (and the encoding, the place or the field), never a 500."""
    coding = ", ".join(v.strip() for v in request.headers.getall("Content-Encoding", ()) if v.strip())
    if coding and coding.lower() not in DECODED_CODINGS and coding.lower() != "identity":
        raise RequestError(f"Content-Encoding {coding!r} is not supported (send gzip, deflate or none)",
                           reason="encoding")
    try:
        raw = await _read_body(request, coding)
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body larger than {request.app[STATE].config.max_body_bytes} bytes", 413,
                           reason="too_large") from None
    except RequestPayloadError as err:
        if isinstance(err.__cause__, ContentEncodingError):
            # not gzip at all, trailing bytes after the gzip member, a broken deflate stream
            raise RequestError(f"request body is not valid {coding.lower()} data (Content-Encoding: {coding})",
                               reason="encoding") from None
        raise RequestError("request body could not be read to its end", reason="not_json") from None
    text = _utf8_text(raw, request)
    try:
        data = json.loads(text, parse_constant=_not_a_number)
    except json.JSONDecodeError as err:
        raise RequestError(f"request body is not JSON: {err}", reason="not_json") from None
    except RecursionError:
        raise RequestError("request body is nested too deeply", reason="not_json") from None
    except ValueError:  # int() refused a number's digits: the only other ValueError json raises
        raise RequestError(f"request body: number too long{_where_long_number(text)} (more than 4300 digits)",
                           reason="not_json") from None
    # JSON carries U+0000 only escaped: look for the escape first (C speed), walk only then
    where = _nul_in(data) if b"\\u0000" in raw else None
    if where is not None:
        # PostgreSQL cannot store U+0000 in text: refused here, by field, rather than a 503 that an
        # agent would retry for ever
        raise RequestError(f"{where or 'body'}: contains a NUL character (\\u0000)", 422, reason="schema")
    return data

async def _read_body(request: web.Request, coding: str) -> bytes:
    """request.read(), except for a compressed body whose bytes all arrived but whose stream never
    ended (a deflate stream cut short, its last bytes in a packet of their own): aiohttp cannot
    decode its end and never ends the body, and the read would wait until the client gave up."""
    reading = asyncio.ensure_future(request.read())
    stalled = 0
    try:
        while True:
            done, _ = await asyncio.wait({reading}, timeout=0.25)
            if done:
                return reading.result()
            complete = coding and request.content_length is not None and \
                request.content.total_raw_bytes >= request.content_length
            stalled = stalled + 1 if complete else 0
            if stalled >= 2:  # every byte here for a quarter of a second and still no end
                raise RequestError(f"request body is not valid {coding.lower()} data: the compressed stream "
                                   f"does not end (Content-Encoding: {coding})", reason="encoding")
    finally:
        reading.cancel()


def _utf8_text(raw: bytes, request: web.Request) -> str:
    """The body decoded strictly as UTF-8 (RFC 8259 §8.1: JSON between systems is UTF-8). A UTF-8
    byte order mark is dropped, as the RFC allows a parser to; UTF-16 and UTF-32 are refused (a
    NUL byte is their mark in JSON, and it is never valid in a UTF-8 JSON text)."""
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    charset = request.charset
    declared = f" (Content-Type says charset={charset}; JSON has no charset but UTF-8)" if charset and \
        charset.lower().replace("_", "-") not in ("utf-8", "utf8") else ""
    if b"\x00" in raw or raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-32 LE mark starts as UTF-16's
        raise RequestError(f"request body is UTF-16 or UTF-32, not UTF-8{declared}; JSON is sent as UTF-8 "
                           "(RFC 8259 §8.1)", reason="not_json")
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"request body is not UTF-8{declared}: {err.reason} at byte {err.start + bom}; JSON is sent "
                           "as UTF-8 (RFC 8259 §8.1)", reason="not_json") from None


def _where_long_number(text: str) -> str:
    found = _LONG_NUMBER.search(text)
    if found is None:
        return ""
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - text.rfind("\n", 0, found.start())
    return f" at line {line}, column {column}"


def _not_a_number(literal: str) -> Any:
    """json.loads' hook for NaN, Infinity and -Infinity, which Python accepts and JSON has not."""
    raise RequestError(f"request body: {literal} is not a JSON number (RFC 8259 §6)", reason="not_json")


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
