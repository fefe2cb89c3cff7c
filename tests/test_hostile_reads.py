"""Hostile readers and guessers: failed tokens and anonymous heavy reads are limited per client
address (429 with Retry-After, counted), reports and claims are computed in a worker process (not
on the event loop that answers the agents) and at most a bounded number at once, and HTML pages
carry the browser's security headers."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collector import offload
from collector.app import create_app
from collector.config import parse_config
from collector.errors import RequestError
from collector.ratelimit import RateLimiter
from collector.reporting import _claim_from_db, _report_from_db, claim_from_db, report_from_db
from collector.service import CollectorState

TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UTC = timezone.utc


def make_state(database_url: str, **extra) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "evaluation": {"interval": "1h", "status_interval": "1d"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/",
                    "outage": {"quorum": "all", "min_duration": "2m"}}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
        **extra,
    }, "test"))


async def client_for(aiohttp_client, tmp_path, **extra):
    client = await aiohttp_client(create_app(make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}", **extra)))
    return client


def result(slot: datetime, ok: bool) -> dict:
    return {"id": uuid.uuid4().hex, "check": "web", "slot": slot.isoformat(),
            "started": (slot + timedelta(milliseconds=15)).isoformat(), "ok": ok,
            "latency_ms": 3.0 if ok else None, "status_code": 200 if ok else None, "error": None if ok else "connect"}


def wrong(token: str = "wrong-token-0123456789") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def metric(client, line: str) -> bool:
    return line in await (await client.get("/metrics")).text()


# --- failed tokens ------------------------------------------------------------------------------

async def test_failed_agent_tokens_from_one_address_are_slowed_and_counted(aiohttp_client, tmp_path) -> None:
    # one more try every 10 s once three have failed: the test's requests all fall in the first 10 s
    client = await client_for(aiohttp_client, tmp_path, auth_failure_limit={"requests_per_second": 0.1, "burst": 3})
    body = {"agent": "a1", "results": []}
    codes = [(await client.post("/api/v1/results", json=body, headers=wrong())).status for _ in range(3)]
    assert codes == [401, 401, 401]
    limited = await client.post("/api/v1/results", json=body, headers=wrong())
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 10
    assert "too many failed token attempts from 127.0.0.1" in (await limited.json())["error"]
    # while the address is limited, a correct token is not even looked at: a guess made now cannot
    # tell a right token from a wrong one (the agent's shipper waits, its results stay spooled)
    correct = await client.post("/api/v1/results", json=body, headers=wrong(TOKENS["a1"]))
    assert correct.status == 429
    # no token at all is not a guess: neither counted nor limited
    assert (await client.post("/api/v1/results", json=body)).status == 401
    assert await metric(client, 'uptime_collector_auth_failures_total{kind="agent"} 3.0')
    assert await metric(client, 'uptime_collector_ingest_rejections_total{reason="auth_rate_limit"} 2.0')
    assert await metric(client, 'uptime_collector_requests_throttled_total{reason="auth_rate_limit"} 2.0')
    assert await metric(client, 'uptime_collector_ingest_rejections_total{reason="token"} 4.0')


async def test_failed_admin_tokens_are_slowed_on_actions_and_private_pages(aiohttp_client, tmp_path) -> None:
    client = await client_for(aiohttp_client, tmp_path, public_reads=False,
                              auth_failure_limit={"requests_per_second": 0.1, "burst": 3})
    assert (await client.put("/api/v1/checks/x", json={}, headers=wrong())).status == 401
    assert (await client.delete("/api/v1/agents/a1", headers=wrong(TOKENS["a1"]))).status == 401  # an agent's token
    page = await client.get("/", headers=wrong())
    assert page.status == 401 and page.content_type == "text/html"
    limited = await client.post("/api/v1/agents", json={"id": "a9"}, headers=ADMIN)
    assert limited.status == 429
    assert "Retry-After" in limited.headers
    assert (await client.get("/metrics", headers=ADMIN)).status == 429
    # an address that does not carry a token is not slowed for another's guesses
    assert (await client.get("/api/v1/outages")).status == 401


async def test_a_correct_token_passes_again_once_the_bucket_refilled(aiohttp_client, tmp_path) -> None:
    client = await client_for(aiohttp_client, tmp_path, auth_failure_limit={"requests_per_second": 4, "burst": 1})
    assert (await client.post("/api/v1/heartbeat", json={"agent": "a1"}, headers=wrong())).status == 401
    await asyncio.sleep(0.5)  # two tokens' worth at 4/s: the one failure is forgiven
    ok = await client.post("/api/v1/heartbeat", json={"agent": "a1"}, headers=wrong(TOKENS["a1"]))
    assert ok.status == 200, await ok.text()


def test_a_limiter_waits_without_taking_and_forgets_full_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.wait("x", now=0.0) == 0.0  # never seen: free
    assert limiter.allow("x", now=0.0) == (True, 0.0)
    assert limiter.allow("x", now=0.0) == (True, 0.0)
    assert limiter.wait("x", now=0.25) == pytest.approx(0.75)
    assert limiter.wait("x", now=0.25) == pytest.approx(0.75)  # waiting took nothing
    assert limiter.allow("x", now=1.0) == (True, 0.0)
    limiter.allow("y", now=1.0)
    limiter._forget(now=3.5)  # x refilled to its burst by 3.0, y by 2.0: the same as never seen
    assert limiter.buckets == {}


def test_a_crowd_of_addresses_cannot_grow_a_limiter_without_bound(monkeypatch) -> None:
    from collector import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_KEYS", 100)
    limiter = RateLimiter(rate=0.001, burst=1)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(limiter.buckets) <= 100
    assert "10.0.3.231" in limiter.buckets  # the newest are kept


# --- anonymous heavy reads ---------------------------------------------------------------------

async def test_anonymous_reports_claims_and_pages_are_limited_per_address(aiohttp_client, tmp_path) -> None:
    client = await client_for(aiohttp_client, tmp_path, public_rate_limit={"requests_per_second": 0.1, "burst": 3})
    claim = {"policy": "sla", "start": "2026-10-03T10:00:00Z", "end": "2026-10-03T11:00:00Z"}
    assert (await client.get("/api/v1/reports/sla", params={"period": "2026-10"})).status == 200
    assert (await client.get("/api/v1/claims/verify", params=claim)).status == 200
    assert (await client.get("/policies/sla/2026-10")).status == 200
    for path, params in (("/", {}), ("/api/v1/reports/sla", {"period": "2026-10"}), ("/api/v1/claims/verify", claim)):
        limited = await client.get(path, params=params)
        assert limited.status == 429, path
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        assert "too many reports, claims or pages asked from 127.0.0.1" in (await limited.json())["error"]
    # cheap reads are not limited, and the admin is not an anonymous reader
    assert (await client.get("/api/v1/policies")).status == 200
    assert (await client.get("/api/v1/reports/sla", params={"period": "2026-10"}, headers=ADMIN)).status == 200
    assert await metric(client, 'uptime_collector_requests_throttled_total{reason="public_rate_limit"} 3.0')


# --- reports off the event loop ---------------------------------------------------------------

async def _pid(session) -> int:
    return os.getpid()


async def _sleep_then_pid(session, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


async def _count_results(session) -> int:
    from sqlalchemy import func, select

    from collector.db import Result

    return await session.scalar(select(func.count()).select_from(Result))


async def test_a_job_runs_in_another_process_on_its_own_connection_to_the_same_database(database_url) -> None:
    state = make_state(database_url)
    try:
        from collector.migrate import upgrade_async

        await upgrade_async(database_url)
        async with state.sessionmaker() as session:
            assert await offload.run_off_loop(session, _pid) != os.getpid()
            assert await offload.run_off_loop(session, _count_results) == 0
    finally:
        await state.engine.dispose()


async def _die_the_first_time(session, marker: str) -> int:
    from pathlib import Path

    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)  # as a worker killed by the kernel for its memory
    return os.getpid()


async def test_a_worker_that_dies_is_replaced_and_its_job_run_again(tmp_path) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")
    try:
        async with state.sessionmaker() as session:
            assert await offload.run_off_loop(session, _die_the_first_time, str(tmp_path / "died")) != os.getpid()
            assert await offload.run_off_loop(session, _pid) != os.getpid()  # the new pool serves on
    finally:
        await state.engine.dispose()


async def test_an_in_memory_database_is_read_here_since_no_other_process_can_open_it() -> None:
    from collector.db import make_engine, make_sessionmaker

    engine = make_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with make_sessionmaker(engine)() as session:
            assert offload.database_of(session) is None
            assert await offload.run_off_loop(session, _pid) == os.getpid()
    finally:
        await engine.dispose()


async def test_reports_and_claims_over_http_are_computed_in_a_worker_and_equal_the_core(database_url, aiohttp_client) -> None:
    state = make_state(database_url)
    client = await aiohttp_client(create_app(state))
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    for agent, token in TOKENS.items():
        resp = await client.post("/api/v1/results", headers=wrong(token), json={
            "agent": agent, "results": [result(base + timedelta(minutes=i), not 10 <= i < 15) for i in range(30)]})
        assert resp.status == 200, await resp.text()
    period = base.strftime("%Y-%m")
    claimed = (base + timedelta(minutes=10), base + timedelta(minutes=15))
    before = offload.completed
    assert (await client.get("/api/v1/reports/sla", params={"period": period})).status == 200
    assert (await client.get("/api/v1/claims/verify", params={
        "policy": "sla", "start": claimed[0].isoformat(), "end": claimed[1].isoformat()})).status == 200
    assert offload.completed >= before + 2  # both answered by a worker process
    # what a worker computes is what the core computes here, figure for figure
    policy, now = state.policies["sla"], datetime.now(UTC)
    expected = state.expected_by_component(policy)
    async with state.sessionmaker() as session:
        report = await report_from_db(session, policy, period, expected_by_component=expected, now=now)
        assert report == await _report_from_db(session, policy, period, [], expected, now)
        claim = await claim_from_db(session, policy, *claimed, expected_by_component=expected)
        assert claim == await _claim_from_db(session, policy, *claimed, [], expected)
    assert report["outages"], report  # the five failed minutes are a verified outage


async def test_more_computations_than_the_bound_are_refused_with_retry_after(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(offload, "MAX_WAITING", 0)
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"
    state = make_state(url)
    # a place is given back when the worker finishes, not when its requester left: an earlier
    # test's abandoned report may still be running in a worker
    for _ in range(600):
        if offload._in_flight == 0:
            break
        await asyncio.sleep(0.1)
    assert offload._in_flight == 0
    try:
        async with state.sessionmaker() as session:
            running = [asyncio.ensure_future(offload.run_off_loop(session, _sleep_then_pid, 1.0))
                       for _ in range(offload.MAX_RUNNING)]
            await asyncio.sleep(0)  # both submitted: every worker taken
            with pytest.raises(RequestError) as refused:
                await report_from_db(session, state.policies["sla"], "2026-10")
            assert refused.value.status == 503
            assert refused.value.extra["retry_after_seconds"] == offload.RETRY_AFTER_SECONDS
            with pytest.raises(RequestError):
                await claim_from_db(session, state.policies["sla"], datetime(2026, 10, 3, tzinfo=UTC),
                                    datetime(2026, 10, 4, tzinfo=UTC))
            assert all(pid != os.getpid() for pid in await asyncio.gather(*running))
    finally:
        await state.engine.dispose()


# --- HTML pages -------------------------------------------------------------------------------

async def test_html_pages_carry_the_browser_security_headers(aiohttp_client, tmp_path) -> None:
    client = await client_for(aiohttp_client, tmp_path)
    for path in ("/", "/policies/sla/2026-10", "/policies/nope", "/policies/sla/2026-13"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.content_type == "text/html", path
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none';"), path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        html = await resp.text()
        # what the policy allows is all a page has: one inline stylesheet, no script, no image
        assert "<script" not in html and "<img" not in html and " style=" not in html and "<link" not in html, path
    redirect = await client.get("/policies/sla", params={"period": "2026-10"}, allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["X-Content-Type-Options"] == "nosniff"
    api = await client.get("/api/v1/policies")
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in api.headers


STOPPING = '''
import asyncio, sys
from collector import offload
from collector.db import make_engine, make_sessionmaker
from stopping_job import long_job

async def main():
    engine = make_engine(sys.argv[1])
    async with make_sessionmaker(engine)() as session:
        jobs = [asyncio.ensure_future(offload.run_off_loop(session, long_job)) for _ in range(5)]
        while offload.completed < 1:  # the first answered: the others are running or queued
            await asyncio.sleep(0.05)
        print("computing", flush=True)
        for job in jobs:
            job.cancel()
    await engine.dispose()

if __name__ == "__main__":
    asyncio.run(main())
'''
STOPPING_JOB = '''
import asyncio
from collector import offload

async def long_job(session):
    if offload.completed == 0 and not getattr(offload, "_first", False):
        offload._first = True  # this worker's first job answers at once, the rest take an hour
        return 0
    await asyncio.sleep(3600)
'''


def test_a_collector_told_to_stop_while_claims_are_computed_stops_at_once(tmp_path) -> None:
    """Neither the running jobs nor the queued ones hold the process at exit."""
    import subprocess
    import sys

    (tmp_path / "stopping.py").write_text(STOPPING)
    (tmp_path / "stopping_job.py").write_text(STOPPING_JOB)
    done = subprocess.run([sys.executable, str(tmp_path / "stopping.py"), f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "computing"
