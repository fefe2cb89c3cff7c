"""Fuzz the ingest and admin endpoints from the published OpenAPI description (schemathesis):
whatever a client sends, the collector answers with a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import threading
import uuid
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
