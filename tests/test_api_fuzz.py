"""Fuzz the ingest and admin endpoints from the published OpenAPI description (schemathesis):
whatever a client sends, the collector answers with a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from collector.app import create_app
from collector.config import parse_config
from collector.openapi import build_spec
from collector.service import CollectorState

AGENT_TOKEN = "fuzz-agent-token-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"

schema = schemathesis.openapi.from_dict(build_spec())


class LiveCollector:
    """The real app on a real loopback port, in a thread of its own (schemathesis calls are sync)."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = parse_config({
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database_url": f"sqlite+aiosqlite:///{tmp / 'fuzz.sqlite'}",
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


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveCollector(tmp_path_factory.mktemp("fuzz")) as collector:
        yield collector


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
