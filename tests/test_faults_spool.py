"""Faults inside the agent's spool: a statement that fails half-way through a multi-statement
change (as a crash or a full disk would make it) must leave the spool as it was.

The spool's connection runs in autocommit mode; Python's `with connection:` begins no
transaction there, so before the fix every statement of a "transaction" committed on its own:
a refused batch could end up both in `results` and in `rejected`, an acknowledgement could
delete part of a batch, and a bulk insert committed row by row (64 s for a million results
instead of 16 s). A trigger that aborts one statement stands in for the crash.
"""
from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from agent.spool import Spool


def result(n: int) -> dict:
    return {"id": uuid.uuid4().hex, "check": "web", "slot": f"2026-11-25T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "started": "2026-11-25T00:00:00.010Z", "ok": True, "latency_ms": 1.0, "status_code": 200,
            "error": None, "detail": None}


def sql(path: Path, statement: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        rows = db.execute(statement).fetchall()
    return rows


@pytest.fixture
async def spool(tmp_path: Path):
    s = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024**2, max_age=86400)
    await s.open()
    yield s
    await s.close()


async def test_a_refusal_moves_a_batch_whole_or_not_at_all(spool: Spool) -> None:
    for n in range(3):
        await spool.put(result(n))
    seqs = [item.seq for item in await spool.peek(10)]
    sql(spool.path, "CREATE TRIGGER crash BEFORE DELETE ON results BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
    with pytest.raises(sqlite3.DatabaseError, match="simulated crash"):
        await spool.reject(seqs, 422, "refused")
    assert sql(spool.path, "SELECT count(*) FROM results") == [(3,)]
    assert sql(spool.path, "SELECT count(*) FROM rejected") == [(0,)], "copied to rejected but still in results"
    assert (spool.count, len(await spool.peek(10))) == (3, 3)


async def test_an_acknowledgement_deletes_a_batch_whole_or_not_at_all(spool: Spool) -> None:
    await spool.put_many([result(n) for n in range(600)])  # deleted in chunks of 500
    seqs = [item.seq for item in await spool.peek(600)]
    sql(spool.path, f"CREATE TRIGGER crash BEFORE DELETE ON results WHEN old.seq = {seqs[550]} "
                    "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
    with pytest.raises(sqlite3.DatabaseError, match="simulated crash"):
        await spool.ack(seqs)
    assert sql(spool.path, "SELECT count(*) FROM results") == [(600,)], "part of the batch was deleted"
    assert spool.count == 600
    sql(spool.path, "DROP TRIGGER crash")
    assert await spool.ack(seqs) == 600
    assert spool.count == 0 and spool.size_bytes == 0


async def test_a_bulk_insert_is_one_transaction(spool: Spool) -> None:
    sql(spool.path, "CREATE TRIGGER crash BEFORE INSERT ON results WHEN (SELECT count(*) FROM results) = 999 "
                    "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
    with pytest.raises(sqlite3.DatabaseError, match="simulated crash"):
        await spool.put_many([result(n) for n in range(2000)])
    assert sql(spool.path, "SELECT count(*) FROM results") == [(0,)]
    assert spool.count == 0
    sql(spool.path, "DROP TRIGGER crash")
    batch = [result(n) for n in range(2000)]
    assert await spool.put_many(batch + batch[:10]) == 2000  # ids already there are ignored
    assert spool.count == 2000
    assert spool.size_bytes == sql(spool.path, "SELECT sum(length(payload)) FROM results")[0][0]
    assert [item.result["id"] for item in await spool.peek(3)] == [r["id"] for r in batch[:3]]
