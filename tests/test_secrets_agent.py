"""Secrets stay private on the agent's side, against real loopback servers.

* A check's credentials (URL user info, secret headers) go only to the origin of its own URL: on
  a redirect to another origin (here: another port of 127.0.0.1) they stay behind.
* A probe's `detail`, the results shipped and the agent's log lines show them redacted.
* The SSRF guard is on by default for checks the collector assigns, off for the agent's own, and
  an agent opts out (or exempts networks) in its own config.
"""
from __future__ import annotations

import base64
import logging
import os
import stat

import pytest
from agent_helpers import (  # first: repo on sys.path
    FakeCollector,
    Server,
    agent_config,
    target_app,
    wait_until,
)
from aiohttp import web

from agent.probers import http
from agent.runner import Agent
from protocol.checks import parse_checks
from protocol.redact import REDACTED

URL_PASSWORD = "url-pass-0001"
SECRETS = (URL_PASSWORD, "Bearer auth-value-0001", "auth-value-0001", "key-value-0001", "cookie-value-0001",
           "custom-token-0001", "proxy-value-0001", "query-token-0001")


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} shows {leaked}"


def http_check(url: str, **fields):
    return parse_checks([{"name": "t", "type": "http", "url": url, "interval": "10s", "timeout": "2s", **fields}])[0]


class Recorder:
    """A loopback server: `/land` records the headers it got; `/to?url=` redirects to `url`
    (302); `/loop` redirects to itself for ever, with a secret in the query."""

    def __init__(self) -> None:
        self.landed: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_get("/land", self._land)
        app.router.add_get("/to", self._to)
        app.router.add_get("/loop", self._loop)
        self.server = Server(app)

    async def _land(self, request: web.Request) -> web.Response:
        self.landed.append(dict(request.headers))
        return web.Response(text="landed")

    async def _to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def _loop(self, request: web.Request) -> web.Response:
        n = int(request.query.get("n", "0")) + 1
        raise web.HTTPFound(f"/loop?token=query-token-0001&n={n}")

    async def __aenter__(self) -> Recorder:
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url


HEADERS = {"X-Api-Key": "key-value-0001", "Cookie": "sid=cookie-value-0001", "X-Custom-Token": "custom-token-0001",
           "Accept": "application/json", "X-Trace": "trace-1"}


@pytest.mark.parametrize("credentials", ["user info", "Authorization"])
async def test_credentials_stay_with_their_origin_across_a_redirect(credentials: str) -> None:
    """First origin 127.0.0.1:A redirects to 127.0.0.1:B, another origin, which records what it
    got: ordinary custom headers arrive, no credential does. A redirect within the first origin
    keeps every header and the Basic auth of the URL's user info."""
    async with Recorder() as first, Recorder() as second:
        if credentials == "user info":
            base, headers = first.url.replace("http://", f"http://ops:{URL_PASSWORD}@"), dict(HEADERS)
            authorization = "Basic " + base64.b64encode(f"ops:{URL_PASSWORD}".encode()).decode()
        else:
            base = first.url
            headers = {**HEADERS, "Authorization": "Bearer auth-value-0001", "Proxy-Authorization": "proxy-value-0001"}
            authorization = "Bearer auth-value-0001"

        result = await http.probe(http_check(f"{base}/to?url={second.url}/land", headers=headers))
        assert (result.ok, result.status_code) == (True, 200), result
        (got,) = second.landed
        assert (got["Accept"], got["X-Trace"]) == ("application/json", "trace-1")
        assert got["User-Agent"].startswith("uptime-agent/")
        assert {"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Custom-Token"}.isdisjoint(got)
        assert_no_secret(repr(got), "the other origin")

        result = await http.probe(http_check(f"{base}/to?url=/land", headers=headers))
        assert result.ok, result
        (same,) = first.landed
        assert same["Authorization"] == authorization
        assert (same["X-Api-Key"], same["X-Custom-Token"], same["Cookie"]) == (
            "key-value-0001", "custom-token-0001", "sid=cookie-value-0001")


async def test_a_redirect_through_another_origin_and_back_gets_the_credentials_back_only_at_home() -> None:
    async with Recorder() as home, Recorder() as away:
        back = f"{home.url}/land"
        check = http_check(f"{home.url}/to?url={away.url}/to?url={back}", headers={"X-Api-Key": "key-value-0001"})
        result = await http.probe(check)
        assert result.ok, result
        assert away.landed == [] and home.landed[0]["X-Api-Key"] == "key-value-0001"


async def test_a_probe_detail_shows_the_credentials_of_a_redirect_target_redacted() -> None:
    async with Recorder() as server:
        check = http_check(f"{server.url}/to?url=ftp://ops:{URL_PASSWORD}@files.example/x")
        result = await http.probe(check)
        assert (result.ok, result.error, result.status_code) == (False, "status", 302)
        assert result.detail == f"status 302 redirects to a non-HTTP URL 'ftp://ops:{REDACTED}@files.example/x'"


async def test_a_redirect_loop_ends_with_status_and_a_redacted_detail() -> None:
    async with Recorder() as server:
        result = await http.probe(http_check(f"{server.url}/loop"))
        assert (result.ok, result.error, result.status_code) == (False, "status", 302)
        assert result.detail == f"10 redirects in a row (the last to /loop?token={REDACTED}&n=10)"


# --- through the whole agent ------------------------------------------------------------------

@pytest.fixture
async def servers():
    collector = await FakeCollector().start()
    target = await Server(target_app()).start()
    yield collector, target
    await target.stop()
    await collector.stop()


async def test_the_agent_logs_and_ships_assigned_checks_without_their_credentials(tmp_path, servers, caplog) -> None:
    """Assigned checks with credentials, one down (503), one unreachable (closed port), then an
    invalid set: the transition logs, the refusal and every shipped result show no secret, and the
    saved assignments (which must hold them) are readable by the agent's user only."""
    caplog.set_level(logging.DEBUG, logger="agent")
    collector, target = servers
    userinfo = target.url.replace("http://", f"http://ops:{URL_PASSWORD}@")
    collector.assignments["a1"] = [
        {"name": "down", "type": "http", "interval": "1s", "timeout": "500ms",
         "url": f"{userinfo}/fail?token=query-token-0001", "headers": HEADERS},
        {"name": "gone", "type": "http", "interval": "1s", "timeout": "500ms", "url": "http://127.0.0.1:9/x",
         "headers": {"Authorization": "Bearer auth-value-0001"}},
    ]
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, collector={"assignments_interval": "200ms"}),
                  on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: {r["check"] for r in seen} == {"down", "gone"}, timeout=5)
        await wait_until(lambda: len(collector.stored) >= 2, timeout=5)
        saved = tmp_path / "assignments-a1.json"
        assert URL_PASSWORD in saved.read_text()  # in full: it is what the agent probes after a restart
        assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
        collector.assignments["a1"] = [{"name": "bad", "type": "http", "url": f"ftp://ops:{URL_PASSWORD}@h/"}]
        await wait_until(lambda: "collector sent invalid checks" in caplog.text, timeout=5)
    finally:
        await agent.stop()
    assert {(r["check"], r["error"]) for r in seen} == {("down", "status"), ("gone", "connect")}
    assert "down: DOWN (status: status 503 not in 2xx)" in caplog.text
    assert "gone: DOWN (connect" in caplog.text
    assert f"ftp://ops:{REDACTED}@h/" in caplog.text
    assert_no_secret(caplog.text, "the agent's log")
    assert_no_secret(repr(list(collector.stored.values())), "the shipped results")


def _origin_check(target, name: str = "web") -> dict:
    return {"name": name, "type": "http", "interval": "1s", "timeout": "500ms", "url": f"{target.url}/ok"}


@pytest.mark.parametrize("source, guard, outcome", [
    ("assigned", None, "blocked"),  # the default for checks a collector hands out
    ("local", None, "ok"),  # the agent's own checks: its operator's call
    ("assigned", {"block_private": False}, "ok"),  # opted out: internal monitoring
    ("assigned", {"block_private": None, "allow": ["127.0.0.0/8"]}, "ok"),  # on, loopback exempted
    ("local", {"block_private": True}, "blocked"),
])
async def test_the_guard_is_on_for_assigned_checks_unless_the_agent_opts_out(
        tmp_path, servers, source, guard, outcome) -> None:
    collector, target = servers
    sections = {"guard": guard, "collector": {"assignments_interval": "200ms"}}
    if source == "assigned":
        collector.assignments["a1"] = [_origin_check(target)]
    else:
        sections["checks"] = [_origin_check(target)]
    seen: list[dict] = []
    agent = Agent(agent_config(tmp_path, collector.url, **sections), on_result=seen.append)
    await agent.start()
    try:
        await wait_until(lambda: len(seen) >= 1, timeout=5)
    finally:
        await agent.stop()
    assert (seen[0]["error"] or "ok") == outcome, seen[0]
    if outcome == "blocked":
        assert seen[0]["detail"].endswith("blocked by the agent's guard: 127.0.0.1 (loopback)")
