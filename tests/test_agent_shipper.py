"""Shipping to a fake collector (a real aiohttp server on loopback): nothing lost, nothing
duplicated, only acknowledged results leave the spool, refusals are kept and said out loud."""
from __future__ import annotations

import logging
import time
import uuid

import pytest
from agent_helpers import FakeCollector, wait_until  # first: puts the repo on sys.path

from agent.collector_client import CollectorClient
from agent.metrics import AgentMetrics
from agent.shipper import BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS, Heartbeat, Shipper, backoff_delay
from agent.spool import Spool


def result(n: int) -> dict:
    return {"id": uuid.uuid4().hex, "check": "web", "slot": "2026-11-25T02:40:00Z",
            "started": "2026-11-25T02:40:00.013Z", "ok": True, "latency_ms": 1.5, "status_code": 200,
            "error": None, "detail": f"n={n}"}


class Pipeline:
    """spool -> shipper -> collector client, as the Agent wires them, for agent `a1`."""

    def __init__(self, tmp_path, collector_url, *, token="tok-a1", batch_size=50):
        self.metrics = AgentMetrics("a1")
        self.spool = Spool(tmp_path / "spool.sqlite", max_bytes=50 * 1024**2, max_age=3600, metrics=self.metrics)
        self.client = CollectorClient(collector_url, token, "a1", timeout=2)
        self.shipper = Shipper(self.client, self.spool, self.metrics, batch_size=batch_size, flush_interval=0.05)
        self.ids: list[str] = []

    async def __aenter__(self):
        await self.spool.open()
        await self.client.open()
        return self

    async def __aexit__(self, *exc):
        await self.shipper.stop(flush_timeout=0)
        await self.client.close()
        await self.spool.close()

    async def put(self, count: int) -> None:
        for n in range(count):
            item = result(n)
            self.ids.append(item["id"])
            await self.spool.put(item)

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
async def collector():
    fake = await FakeCollector().start()
    yield fake
    await fake.stop()


def test_backoff_is_full_jitter_from_50ms_to_30s():
    assert (BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS) == (0.05, 30.0)
    first = [backoff_delay(0) for _ in range(200)]
    late = [backoff_delay(30) for _ in range(200)]
    assert all(0 <= d <= 0.05 for d in first)
    assert all(0 <= d <= 30.0 for d in late) and max(late) > 15  # capped, and spread over [0, 30]


async def test_an_outage_loses_nothing_duplicates_nothing_and_backs_off(tmp_path, collector):
    async with Pipeline(tmp_path, collector.url) as p:
        await p.put(120)
        outage = 1.5
        collector.fail_until = time.monotonic() + outage
        p.shipper.start()
        await wait_until(lambda: p.spool.count == 0, timeout=20)

    failed = [post for post in collector.posts if post["status"] == 503]
    # Without backoff a loopback collector is hit hundreds of times in 1.5 s; with 50 ms doubling
    # (full jitter) it is about a dozen at most.
    assert 2 <= len(failed) <= 30
    assert sorted(collector.stored) == sorted(p.ids)
    assert collector.duplicates == 0
    shipped_order = [i for post in collector.posts if post["status"] == 200 for i in post["ids"]]
    assert shipped_order == p.ids  # in spool order, each exactly once
    assert p.sample("uptime_agent_ship_failures_total", reason="server_error") == len(failed)
    assert p.sample("uptime_agent_shipped_results_total") == 120
    assert p.sample("uptime_agent_spool_results") == 0


async def test_results_stay_in_the_spool_until_acknowledged(tmp_path, collector):
    collector.fail_until = time.monotonic() + 60
    async with Pipeline(tmp_path, collector.url, batch_size=10) as p:
        await p.put(25)
        p.shipper.start()
        await wait_until(lambda: len(collector.posts) >= 3)
        assert p.spool.count == 25
        collector.fail_until = 0
        await wait_until(lambda: p.spool.count == 0, timeout=10)
    assert sorted(collector.stored) == sorted(p.ids)
    assert [len(post["ids"]) for post in collector.posts if post["status"] == 200] == [10, 10, 5]


async def test_only_the_results_a_refusal_names_are_set_aside_and_the_rest_is_shipped(tmp_path, collector, caplog):
    async with Pipeline(tmp_path, collector.url, batch_size=50) as p:
        await p.put(120)
        bad = [p.ids[3], p.ids[70]]
        collector.refuse_ids = set(bad)
        with caplog.at_level(logging.ERROR, logger="agent.shipper"):
            p.shipper.start()
            await wait_until(lambda: p.spool.count == 0, timeout=10)
        rejected = await p.spool.rejected()
    assert [r["result"]["id"] for r in rejected] == bad
    assert [(r["status"], r["error"]) for r in rejected] == [
        (422, "results[3].slot: refused by the test"), (422, "results[19].slot: refused by the test")]
    assert sorted(collector.stored) == sorted(set(p.ids) - set(bad))  # no good result set aside with a bad one
    assert collector.duplicates == 0
    assert p.sample("uptime_agent_rejected_results_total") == 2
    assert p.sample("uptime_agent_ship_failures_total", reason="rejected") == 2
    assert any("REFUSED 1 of 50 results with 422" in r.getMessage() for r in caplog.records)


async def test_a_refusal_that_names_no_result_is_narrowed_down_in_halves(tmp_path, collector):
    collector.name_culprits = False
    async with Pipeline(tmp_path, collector.url, batch_size=8) as p:
        await p.put(8)
        collector.refuse_ids = {p.ids[5]}
        p.shipper.start()
        await wait_until(lambda: p.spool.count == 0, timeout=10)
        rejected = await p.spool.rejected()
    assert [r["result"]["id"] for r in rejected] == [p.ids[5]]
    assert sorted(collector.stored) == sorted(set(p.ids) - {p.ids[5]})
    # halves until the culprit is alone: 8 refused, 4 stored, 4 refused, 2 refused, then one by one
    assert [(post["status"], len(post["ids"])) for post in collector.posts] == [
        (422, 8), (200, 4), (422, 4), (422, 2), (200, 1), (422, 1), (200, 1), (200, 1)]


async def test_a_batch_too_large_is_retried_in_halves(tmp_path, collector):
    collector.result_statuses = [413]
    async with Pipeline(tmp_path, collector.url, batch_size=8) as p:
        await p.put(8)
        p.shipper.start()
        await wait_until(lambda: p.spool.count == 0, timeout=10)
        assert await p.spool.rejected() == []
    assert [(post["status"], len(post["ids"])) for post in collector.posts] == [(413, 8), (200, 4), (200, 4)]
    assert sorted(collector.stored) == sorted(p.ids)


async def test_a_refused_token_keeps_the_results_and_says_so(tmp_path, collector, caplog):
    async with Pipeline(tmp_path, collector.url, token="wrong-token") as p:
        await p.put(5)
        with caplog.at_level(logging.ERROR, logger="agent.shipper"):
            p.shipper.start()
            await wait_until(lambda: len(collector.posts) >= 2)
        assert p.spool.count == 5
        assert p.sample("uptime_agent_ship_failures_total", reason="unauthorized") >= 2
        assert any("collector refused the token (401" in r.getMessage() for r in caplog.records)
        collector.tokens["wrong-token"] = "a1"  # the operator fixes the collector side
        await wait_until(lambda: p.spool.count == 0, timeout=40)
    assert sorted(collector.stored) == sorted(p.ids)


async def test_an_unreachable_collector_keeps_results_until_it_comes_up(tmp_path, collector):
    port = collector.server.port
    await collector.stop()
    async with Pipeline(tmp_path, f"http://127.0.0.1:{port}") as p:
        await p.put(5)
        p.shipper.start()
        await wait_until(lambda: (p.sample("uptime_agent_ship_failures_total", reason="connect") or 0) >= 2)
        assert p.spool.count == 5
        await collector.start(port)
        await wait_until(lambda: p.spool.count == 0, timeout=40)
    assert sorted(collector.stored) == sorted(p.ids)


async def test_heartbeat_measures_the_clock_offset(tmp_path):
    collector = await FakeCollector(clock_skew=2.5).start()
    try:
        async with Pipeline(tmp_path, collector.url) as p:
            await p.put(3)
            heartbeat = Heartbeat(p.client, p.spool, p.metrics, interval=3600)
            offset = await heartbeat.beat()
            again = await heartbeat.beat()
    finally:
        await collector.stop()
    assert offset == pytest.approx(2.5, abs=0.2)
    assert p.sample("uptime_agent_clock_offset_seconds") == again
    first, second = collector.heartbeats
    assert (first["agent"], first["spool_results"], first["clock_offset_seconds"]) == ("a1", 3, None)  # not measured yet
    assert second["clock_offset_seconds"] == pytest.approx(offset, abs=1e-5)
    assert first["sent"].endswith("Z")


async def test_heartbeat_to_a_dead_collector_is_a_logged_failure_not_a_crash(tmp_path, collector, caplog):
    port = collector.server.port
    await collector.stop()
    async with Pipeline(tmp_path, f"http://127.0.0.1:{port}") as p:
        heartbeat = Heartbeat(p.client, p.spool, p.metrics, interval=3600)
        with caplog.at_level(logging.WARNING, logger="agent.shipper"):
            assert await heartbeat.beat() is None
    assert any(r.getMessage().startswith("heartbeat failed: cannot reach") for r in caplog.records)
