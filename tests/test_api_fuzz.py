"""Fuzz the ingest and admin endpoints from the published OpenAPI description (schemathesis), and
their bodies' bytes, Content-Encoding and charset (hypothesis): whatever a client sends, the
collector answers with a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import socket
import threading
import uuid
import zlib
from pathlib import Path

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import not_a_server_error

from collector.app import create_app
from collector.config import parse_config
from collector.api.openapi import build_spec
from collector.service import CollectorState
from conftest import POSTGRES

AGENT_TOKEN = "fuzz-agent-token-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"

schema = schemathesis.openapi.from_dict(build_spec())


class LiveCollector:
    """The real app on a real loopback port, in a thread of its own (schemathesis calls are sync)."""

    def __init__(self, tmp: Path, database_url: str | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = parse_config({
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database_url": database_url or f"sqlite+aiosqlite:///{tmp / 'fuzz.sqlite'}",
            "admin_token": ADMIN_TOKEN,
            "rate_limit": {"requests_per_second": 100000, "burst": 100000},
            # every request comes from 127.0.0.1, many with a fuzzed token: the per-address limits
            # would soon answer everything 429 and hide what the handlers do
            "auth_failure_limit": {"requests_per_second": 100000, "burst": 100000},
            "public_rate_limit": {"requests_per_second": 100000, "burst": 100000},
            "agents": [{"id": "fuzzer", "token": AGENT_TOKEN}],
            "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/"}],
            "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
        }, "fuzz")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(create_app(CollectorState.create(self.config)))
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> "LiveCollector":
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    """On both back ends: PostgreSQL is the stricter one (it refuses a NUL in text, for one)."""
    if request.param == "sqlite":
        with LiveCollector(tmp_path_factory.mktemp("fuzz")) as collector:
            yield collector
        return
    name = f"uptime_fuzz_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {err}")
    try:
        url = f"{POSTGRES.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
        with LiveCollector(tmp_path_factory.mktemp("fuzz"), url) as collector:
            yield collector
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(f"{POSTGRES}/postgres", timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_produces_a_server_error(case, live) -> None:
    path = case.operation.path
    admin = path.startswith(("/api/v1/maintenance", "/api/v1/agents")) or case.method.upper() in ("PUT", "DELETE")
    token = ADMIN_TOKEN if admin else AGENT_TOKEN
    response = case.call(base_url=live.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if 400 <= response.status_code < 500:
        assert response.json().get("error"), f"{path}: a {response.status_code} must say what is wrong"


# Header values as a client may send them: any Latin-1 text but line breaks (http.client refuses those).
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@given(scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]), token=HEADER_TEXT,
       where=st.sampled_from([("POST", "/api/v1/results"), ("POST", "/api/v1/heartbeat"), ("GET", "/api/v1/assignments"),
                              ("POST", "/api/v1/agents"), ("PUT", "/api/v1/checks/x"), ("DELETE", "/api/v1/policies/sla")]))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_authorization_header_produces_a_server_error(live, scheme, token, where) -> None:
    method, path = where
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", (scheme + token).encode("latin-1"))
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "2")
        conn.endheaders(b"{}")
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, f"{method} {path} with Authorization {scheme + token!r}: {status} {body[:200]!r}"


# Every endpoint that reads a body, with the token it needs.
BODY_ENDPOINTS = [("POST", "/api/v1/results", AGENT_TOKEN), ("POST", "/api/v1/heartbeat", AGENT_TOKEN),
                  ("PUT", "/api/v1/checks/fuzzed", ADMIN_TOKEN), ("PUT", "/api/v1/policies/fuzzed", ADMIN_TOKEN),
                  ("POST", "/api/v1/maintenance", ADMIN_TOKEN), ("POST", "/api/v1/agents", ADMIN_TOKEN)]
# Documents close to what the endpoints accept, so that the decoding is what gets varied.
DOCUMENTS = st.sampled_from([
    {"agent": "fuzzer", "results": [{"id": "fuzz-0001", "check": "web", "slot": "2026-11-01T00:00:00Z",
                                     "started": "2026-11-01T00:00:01Z", "ok": True, "latency_ms": 1.5,
                                     "detail": "caf\u00e9 \u2603 \U0001f600 a\x00b"}]},
    {"agent": "fuzzer", "clock_offset_seconds": 0.25, "spool_results": 3},
    {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "headers": {"X-\u00e9": "\u2603"}},
    {"preset": "nexcess", "components": ["web"]},
    {"policy": "sla", "kind": "scheduled", "announced": "2026-10-01T00:00:00Z", "start": "2026-10-03T10:00:00Z",
     "end": "2026-10-03T11:00:00Z", "note": "\ufeff\u0000\ud7ff"},
    {"id": "fuzz-agent"},
]) | st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                  lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                  max_leaves=12)
TEXT_CODECS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "latin-1", "cp1252"]
COMPRESSIONS = {
    "none": lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw deflate": lambda b: zlib.compress(b)[2:-4],
    "gzip, trailing bytes": lambda b: gzip.compress(b) + b"\x00junk",
    "gzip, truncated": lambda b: gzip.compress(b)[:-6],
    "gzip twice": lambda b: gzip.compress(gzip.compress(b)),
}
CODINGS = ["", "gzip", "deflate", "identity", "br", "zstd", "x-gzip", "gzip, gzip", "compress", "GZip", " deflate ",
           "\u00e9", "*", "gzip;q=1"]
CHARSETS = [None, "utf-8", "UTF-8", "utf-16", "utf-32", "latin-1", "bogus", ""]


@st.composite
def hostile_bodies(draw) -> tuple[bytes, str, str | None]:
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=400))
    else:
        text = json.dumps(draw(DOCUMENTS), ensure_ascii=draw(st.booleans()))
        raw = text.encode(draw(st.sampled_from(TEXT_CODECS)), errors="replace")
    raw = COMPRESSIONS[draw(st.sampled_from(sorted(COMPRESSIONS)))](raw)
    return raw, draw(st.sampled_from(CODINGS)), draw(st.sampled_from(CHARSETS))


@given(body=hostile_bodies(), where=st.sampled_from(BODY_ENDPOINTS))
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_body_encoding_produces_a_server_error(live, body, where) -> None:
    data, coding, charset = body
    method, path, token = where
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json" + (f"; charset={charset}" if charset is not None else ""))
        if coding:
            conn.putheader("Content-Encoding", coding.encode("latin-1", errors="replace"))
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        status, reply = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, f"{method} {path} Content-Encoding {coding!r} charset {charset!r} {data[:80]!r}: {status} {reply[:300]!r}"
    if 400 <= status < 500 and response.getheader("Content-Type", "").startswith("application/json"):
        assert json.loads(reply).get("error"), f"{path}: a {status} must say what is wrong"
