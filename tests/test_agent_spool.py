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


async def test_one_result_can_carry_its_own_refusal_reason(spool):
    for n in range(4):
        await spool.put(result(n))
    seqs = [item.seq for item in await spool.peek(4)]
    await spool.reject(seqs[:3], 422, "batch refused", errors={seqs[0]: "results.0.slot: bad", seqs[2]: "x" * 5000,
                                                             seqs[3]: "not in this refusal"})
    rejected = await spool.rejected()
    assert [(r["result"]["n"], r["status"], r["error"]) for r in rejected] == [
        (0, 422, "results.0.slot: bad"), (1, 422, "batch refused"), (2, 422, "x" * 2000)]
    assert [item.result["n"] for item in await spool.peek(10)] == [3]  # errors= moves nothing by itself
    # the byte accounting follows each row's own message
    db = sqlite3.connect(spool.path)
    assert spool.rejected_bytes == db.execute("SELECT sum(length(payload) + length(error)) FROM rejected").fetchone()[0]
    assert spool.size_bytes == db.execute("SELECT sum(length(payload)) FROM results").fetchone()[0]
    # a later refusal naming an already refused seq leaves that row's reason alone
    await spool.reject([seqs[0], seqs[3]], 400, "second", errors={seqs[0]: "rewritten"})
    assert [(r["result"]["n"], r["error"]) for r in await spool.rejected()] == [
        (0, "results.0.slot: bad"), (1, "batch refused"), (2, "x" * 2000), (3, "second")]
    assert spool.rejected_bytes == db.execute("SELECT sum(length(payload) + length(error)) FROM rejected").fetchone()[0]
    db.close()


async def test_max_bytes_covers_rejected_results_and_drops_them_first(tmp_path, caplog):
    """A collector that refuses everything for good: without the rejected table in the bound,
    the spool would grow without limit. The oldest refused results go first, under their own
    reason; unshipped results are dropped only once no refused one is left."""
    metrics = AgentMetrics("a1")
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024, max_age=3600, metrics=metrics)
    await spool.open()
    assert dropped(metrics, "rejected_bytes") == 0  # the series exists before the first drop
    try:
        with caplog.at_level(logging.WARNING, logger="agent.spool"):
            for n in range(100):  # ~1.2 KB each, every one refused: about half must go
                await spool.put(result(n, pad=1000))
                batch = await spool.peek(10)
                await spool.reject([item.seq for item in batch], 422, "refused")
            assert spool.count == 0 and spool.size_bytes == 0
            assert spool.total_bytes == spool.rejected_bytes <= 64 * 1024
            kept = [r["result"]["n"] for r in await spool.rejected()]
            assert kept == list(range(100 - len(kept), 100))  # the newest refusals, in order
            assert 40 < len(kept) < 60
            assert dropped(metrics, "rejected_bytes") == 100 - len(kept)
            assert dropped(metrics, "bytes") == 0
            assert any("over max_bytes 64KB, deleted the" in r.getMessage() and "rejected" in r.getMessage()
                       for r in caplog.records)

            # unshipped results now push the rejected ones out first ...
            caplog.clear()
            for n in range(100, 130):
                await spool.put(result(n, pad=1000))
            assert spool.count == 30  # none of the new ones dropped
            assert spool.total_bytes <= 64 * 1024
            assert len(await spool.rejected()) < len(kept)
            assert dropped(metrics, "bytes") == 0
            # ... and once none is left, the oldest unshipped results go, as before
            for n in range(130, 200):
                await spool.put(result(n, pad=1000))
            assert await spool.rejected() == [] and spool.rejected_bytes == 0
            unshipped = [item.result["n"] for item in await spool.peek(1000)]
            assert unshipped == list(range(200 - len(unshipped), 200))
            assert spool.total_bytes == spool.size_bytes <= 64 * 1024
            assert dropped(metrics, "rejected_bytes") == 100
            assert dropped(metrics, "bytes") == 100 - len(unshipped)  # of the 100 put since
    finally:
        await spool.close()
    # a restart counts both tables again
    again = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024, max_age=3600)
    await again.open()
    try:
        db = sqlite3.connect(again.path)
        assert again.total_bytes == db.execute(
            "SELECT (SELECT coalesce(sum(length(payload)), 0) FROM results)"
            " + (SELECT coalesce(sum(length(payload) + length(error)), 0) FROM rejected)").fetchone()[0]
        db.close()
    finally:
        await again.close()


async def test_open_enforces_max_bytes_over_both_tables(tmp_path):
    """A spool left over the bound (a smaller max_bytes after a restart) is brought within it
    at open, refused results first."""
    path = tmp_path / "spool.sqlite"
    big = Spool(path, max_bytes=10 * 1024**2, max_age=3600)
    await big.open()
    await big.put_many([result(n, pad=1000) for n in range(40)])
    await big.reject([item.seq for item in await big.peek(20)], 422, "refused")
    await big.close()
    metrics = AgentMetrics("a1")
    small = Spool(path, max_bytes=20 * 1024, max_age=3600, metrics=metrics)
    await small.open()
    try:
        assert small.total_bytes <= 20 * 1024  # 40 x ~1.2 KB: all 20 refused and some unshipped must go
        assert await small.rejected() == []
        assert dropped(metrics, "rejected_bytes") == 20
        assert small.count == 20 - dropped(metrics, "bytes") > 0
    finally:
        await small.close()


async def test_age_bound_keeps_the_rejected_byte_count_exact(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=10 * 1024**2, max_age=0.3)
    await spool.open()
    try:
        for n in range(3):
            await spool.put(result(n))
        await spool.reject([item.seq for item in await spool.peek(3)], 422, "refused")
        assert spool.rejected_bytes > 0
        await asyncio.sleep(0.4)
        await spool.enforce_bounds()
        assert await spool.rejected() == [] and spool.rejected_bytes == 0 == spool.total_bytes
    finally:
        await spool.close()
