"""The spool: durable, ordered, bounded by bytes and age, and never silent about a drop."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid

import pytest
from agent_helpers import REPO  # noqa: F401  (first: puts the repo on sys.path)

from agent.metrics import AgentMetrics
from agent.spool import Spool


def result(n: int, pad: int = 0) -> dict:
    return {"id": uuid.uuid4().hex, "check": "web", "slot": f"2026-11-25T02:40:{n % 60:02d}Z",
            "started": "2026-11-25T02:40:00.013Z", "ok": True, "latency_ms": 1.0, "status_code": 200,
            "error": None, "detail": "x" * pad or None, "n": n}


def dropped(metrics: AgentMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("uptime_agent_spool_dropped_results_total", {"reason": reason})


@pytest.fixture
async def spool(tmp_path):
    metrics = AgentMetrics("a1")
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=10 * 1024**2, max_age=3600, metrics=metrics)
    await spool.open()
    spool.test_metrics = metrics
    yield spool
    await spool.close()


async def test_results_come_back_in_order_and_leave_only_when_acked(spool):
    for n in range(5):
        await spool.put(result(n))
    batch = await spool.peek(3)
    assert [item.result["n"] for item in batch] == [0, 1, 2]
    assert await spool.peek(3) == batch  # peeking removes nothing
    await spool.ack([item.seq for item in batch])
    assert [item.result["n"] for item in await spool.peek(10)] == [3, 4]
    assert spool.count == 2
    assert spool.test_metrics.registry.get_sample_value("uptime_agent_spool_results") == 2


async def test_the_same_result_id_is_stored_once(spool):
    one = result(1)
    await spool.put(one)
    await spool.put(one)
    assert spool.count == 1 and len(await spool.peek(10)) == 1


async def test_results_survive_a_restart_in_wal_mode(tmp_path):
    path = tmp_path / "spool.sqlite"
    first = Spool(path, max_bytes=10 * 1024**2, max_age=3600)
    await first.open()
    for n in range(3):
        await first.put(result(n))
    await first.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second = Spool(path, max_bytes=10 * 1024**2, max_age=3600)
    await second.open()
    try:
        assert second.count == 3
        assert [item.result["n"] for item in await second.peek(10)] == [0, 1, 2]
    finally:
        await second.close()


async def test_over_max_bytes_the_oldest_are_dropped_counted_and_logged(tmp_path, caplog):
    metrics = AgentMetrics("a1")
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024, max_age=3600, metrics=metrics)
    await spool.open()
    try:
        with caplog.at_level(logging.WARNING, logger="agent.spool"):
            for n in range(100):  # ~1.2 KB each: about half must go
                await spool.put(result(n, pad=1000))
        kept = [item.result["n"] for item in await spool.peek(1000)]
        assert kept == list(range(100 - len(kept), 100))  # the newest, contiguous, in order
        assert 40 < len(kept) < 60
        assert spool.size_bytes <= 64 * 1024
        assert dropped(metrics, "bytes") == 100 - len(kept)
        assert dropped(metrics, "age") == 0
        assert metrics.registry.get_sample_value("uptime_agent_spool_results") == len(kept)
        assert any("over max_bytes 64KB, dropped the" in r.getMessage() for r in caplog.records)
    finally:
        await spool.close()


async def test_older_than_max_age_are_dropped_counted_and_logged(tmp_path, caplog):
    metrics = AgentMetrics("a1")
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=10 * 1024**2, max_age=0.3, metrics=metrics)
    await spool.open()
    try:
        for n in range(3):
            await spool.put(result(n))
        await asyncio.sleep(0.4)
        await spool.put(result(3))
        with caplog.at_level(logging.WARNING, logger="agent.spool"):
            await spool.enforce_bounds()
        assert [item.result["n"] for item in await spool.peek(10)] == [3]
        assert dropped(metrics, "age") == 3
        assert any("dropped 3 results older than max_age 300ms" in r.getMessage() for r in caplog.records)
    finally:
        await spool.close()


async def test_rejected_results_move_to_their_own_table(spool):
    for n in range(3):
        await spool.put(result(n))
    first = (await spool.peek(2))
    await spool.reject([item.seq for item in first], 422, "results.0.slot: bad")
    assert [item.result["n"] for item in await spool.peek(10)] == [2]
    rejected = await spool.rejected()
    assert [(r["result"]["n"], r["status"], r["error"]) for r in rejected] == [
        (0, 422, "results.0.slot: bad"), (1, 422, "results.0.slot: bad")]
