"""Real servers for the agent's tests: probe targets, a fake collector, a self-signed TLS target.

Imported by tests/test_agent_*.py. Everything listens on 127.0.0.1 with port 0.
"""
from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the package is not installed in the venv; import it from the tree
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from agent.config import parse_config  # noqa: E402

WIRE_KEYS = {"id", "check", "slot", "started", "ok", "latency_ms", "status_code", "error", "detail"}
# the details a result may carry besides (wire-protocol.md, "Details")
WIRE_OPTIONAL_KEYS = {"degraded", "phases", "final_url", "redirects", "cert_not_after", "rcode", "answers", "steps",
                      "failed_step", "scheduled"}
WIRE_ERRORS = {"dns", "connect", "timeout", "tls", "status", "body", "icmp", "permission", "blocked", "internal",
               "expect", "cert_expiry", "rcode", "answer", "assertion"}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


async def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll `predicate()` (sync) until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def parse_z(text: str) -> datetime:
    assert RFC3339_Z.match(text), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def agent_config(tmp_path: Path, collector_url: str, *, agent_id: str = "a1", token: str = "tok-a1", **sections: Any):
    """A validated AgentConfig for tests: metrics on a free port, spool under tmp_path."""
    data: dict[str, Any] = {
        "agent": {"id": agent_id},
        "collector": {
            "url": collector_url,
            "token": token,
            "flush_interval": "100ms",
            "heartbeat_interval": "1h",
            "request_timeout": "2s",
        },
        "metrics": {"listen": "127.0.0.1:0"},
        "spool": {"path": str(tmp_path / "spool-{agent_id}.sqlite")},
        # The targets here are on 127.0.0.1, which the SSRF guard refuses for assigned checks by
        # default: opted out explicitly. `guard=None` leaves the section out (the defaults).
        "guard": {"block_private": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


class Server:
    """An aiohttp application on 127.0.0.1, port 0 (or a given port), optionally with TLS."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None, port: int = 0):
        self.app = app
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> Server:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- probe targets --------------------------------------------------------------------------


PEER_PORTS = web.AppKey("peer_ports", list)


def target_app() -> web.Application:
    """/ok 200 "status: ok"; /fail 503; /slow waits ?s= seconds; /wrong 200 with another body;
    /peer records the client's source port in app[PEER_PORTS] (a reused connection repeats one)."""
    app = web.Application()
    app[PEER_PORTS] = []

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="status: ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="status: ok (late)")

    async def wrong(request: web.Request) -> web.Response:
        return web.Response(text="status: degraded")

    async def peer(request: web.Request) -> web.Response:
        app[PEER_PORTS].append(request.transport.get_extra_info("peername")[1])
        return web.Response(text="ok")

    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    app.router.add_get("/wrong", wrong)
    app.router.add_get("/peer", peer)
    return app


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (openssl CLI:
    the `cryptography` package is not in the venv)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# --- fake collector -------------------------------------------------------------------------


class FakeCollector:
    """The collector side of docs/wire-protocol.md, strict about what it receives.

    - POST /api/v1/results: checks the token and every result's shape (422 if wrong), answers
      `fail_status` while an outage lasts (`fail_until`), then the next status from
      `result_statuses` if any (nothing stored in either case), 422 naming the results of
      `refuse_ids` if the batch holds any, else stores and answers 200;
    - POST /api/v1/heartbeat: records it, answers `server_time` shifted by `clock_skew` seconds;
    - GET /api/v1/assignments: `assignments` with an ETag; If-None-Match gives 304.
    """

    def __init__(self, tokens: dict[str, str] | None = None, *, clock_skew: float = 0.0):
        self.tokens = tokens if tokens is not None else {"tok-a1": "a1", "tok-a2": "a2"}
        self.clock_skew = clock_skew
        self.result_statuses: list[int] = []  # answered in order before going back to 200
        # results refused for good, as the collector refuses them: the whole batch with 422, naming
        # each culprit in `rejected` (or, with name_culprits False, naming none)
        self.refuse_ids: set[str] = set()
        self.name_culprits = True
        self.fail_until = 0.0  # time.monotonic() until which every POST /results gets fail_status
        self.fail_status = 503
        self.posts: list[dict[str, Any]] = []  # every POST /results: status, agent, ids, time
        self.stored: dict[str, dict[str, Any]] = {}  # id -> result, as committed
        self.duplicates = 0
        self.heartbeats: list[dict[str, Any]] = []
        self.assignments: dict[str, list[dict[str, Any]]] = {}
        self.assignment_requests: list[tuple[str, str | None, int]] = []  # agent, If-None-Match, status
        self.app = web.Application(client_max_size=64 * 1024**2)
        self.app.router.add_post("/api/v1/results", self._results)
        self.app.router.add_post("/api/v1/heartbeat", self._heartbeat)
        self.app.router.add_get("/api/v1/assignments", self._assignments)
        self.server = Server(self.app)

    async def start(self, port: int = 0) -> FakeCollector:
        self.server.port = port
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def _agent(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return self.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None

    async def _results(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        body = await request.json()
        ids = [r.get("id") for r in body.get("results", [])]
        record = {"agent": body.get("agent"), "ids": ids, "time": time.monotonic(), "status": None}
        self.posts.append(record)

        def answer(status: int, payload: dict) -> web.Response:
            record["status"] = status
            return web.json_response(payload, status=status)

        if agent is None:
            return answer(401, {"error": "unknown token"})
        if body.get("agent") != agent:
            return answer(403, {"error": f"token of agent {agent}"})
        problem = _wire_problem(body)
        if problem:
            return answer(422, {"error": problem})
        if time.monotonic() < self.fail_until:
            return answer(self.fail_status, {"error": f"test outage ({self.fail_status})"})
        if self.result_statuses:
            status = self.result_statuses.pop(0)
            return answer(status, {"error": f"test says {status}"})
        culprits = [{"index": i, "id": r["id"], "reason": "future", "error": f"results[{i}].slot: refused by the test"}
                    for i, r in enumerate(body["results"]) if r["id"] in self.refuse_ids]
        if culprits:
            return answer(422, {"error": culprits[0]["error"], **({"rejected": culprits} if self.name_culprits else {})})
        accepted = 0
        for result in body["results"]:
            if result["id"] in self.stored:
                self.duplicates += 1
            else:
                self.stored[result["id"]] = {"agent": agent, **result}
                accepted += 1
        return answer(200, {"accepted": accepted, "duplicates": len(ids) - accepted})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        if agent is None:
            return web.json_response({"error": "unknown token"}, status=401)
        body = await request.json()
        self.heartbeats.append(body)
        now = datetime.now(timezone.utc) + timedelta(seconds=self.clock_skew)
        return web.json_response({"server_time": now.isoformat().replace("+00:00", "Z")})

    async def _assignments(self, request: web.Request) -> web.Response:
        agent = self._agent(request)
        if agent is None:
            return web.json_response({"error": "unknown token"}, status=401)
        checks = self.assignments.get(agent, [])
        etag = '"%08x"' % (hash(json.dumps(checks, sort_keys=True)) & 0xFFFFFFFF)
        if_none_match = request.headers.get("If-None-Match")
        status = 304 if if_none_match == etag else 200
        self.assignment_requests.append((agent, if_none_match, status))
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response({"agent": agent, "checks": checks}, headers={"ETag": etag})


def _wire_problem(body: Any) -> str | None:
    """What is wrong with a POST /api/v1/results body, per docs/wire-protocol.md, or None."""
    if not isinstance(body, dict) or set(body) != {"agent", "results"} or not isinstance(body["results"], list):
        return "body must be {agent, results}"
    for index, result in enumerate(body["results"]):
        where = f"results.{index}"
        if not isinstance(result, dict) or not WIRE_KEYS <= set(result) <= WIRE_KEYS | WIRE_OPTIONAL_KEYS:
            return f"{where}: keys must be {sorted(WIRE_KEYS)}, and of {sorted(WIRE_OPTIONAL_KEYS)}"
        if not re.fullmatch(r"[0-9a-f]{32}", result["id"]):
            return f"{where}.id: not a uuid4 hex"
        for key in ("slot", "started"):
            if not isinstance(result[key], str) or not RFC3339_Z.match(result[key]):
                return f"{where}.{key}: not RFC 3339 UTC with Z"
        if not isinstance(result["ok"], bool):
            return f"{where}.ok: not a bool"
        if result["ok"] != (result["error"] is None):
            return f"{where}: ok and error disagree"
        if result["error"] is not None and result["error"] not in WIRE_ERRORS:
            return f"{where}.error: unknown reason"
        if result["detail"] is not None and len(result["detail"]) > 500:
            return f"{where}.detail: longer than 500"
        if result["latency_ms"] is not None and not isinstance(result["latency_ms"], (int, float)):
            return f"{where}.latency_ms: not a number"
    return None
