"""Group commit in the agent's spool: results put close together share one SQLite transaction,
and `put` returns only once that transaction committed (a result its caller was told is spooled
is on disk, read here through a second, independent connection)."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.spool import GROUP_MAX_RESULTS, Spool


def result(n: int) -> dict:
    return {"id": uuid.uuid4().hex, "check": "web", "slot": f"2026-11-25T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "started": "2026-11-25T00:00:00.010Z", "ok": True, "latency_ms": 1.0, "status_code": 200,
            "error": None, "detail": None}


def on_disk(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM results ORDER BY seq")]


@pytest.fixture
async def spool(tmp_path: Path):
    s = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024**2, max_age=86400)
    await s.open()
    yield s
    await s.close()


async def test_concurrent_puts_share_transactions_and_are_on_disk_when_put_returns(spool: Spool) -> None:
    results = [result(n) for n in range(1200)]
    await asyncio.gather(*(spool.put(r) for r in results))
    ids = on_disk(spool.path)  # read once every put returned: all of them committed
    assert ids == [r["id"] for r in results]  # put order is shipping order
    with sqlite3.connect(spool.path) as db:
        # `spooled` is one time.time() per transaction, so it names the group a row was in
        groups = db.execute("SELECT spooled, count(*) FROM results GROUP BY spooled").fetchall()
    assert 3 <= len(groups) <= 10, groups  # not 1200 transactions
    assert max(size for _, size in groups) <= GROUP_MAX_RESULTS
    assert spool.count == 1200


async def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 1024**2, max_age=86400)
    await s.open()
    results = [result(n) for n in range(7)]
    waiting = [asyncio.ensure_future(s.put(r)) for r in results]
    await asyncio.sleep(0)  # the puts are queued, the window has not ended
    await s.close()
    await asyncio.gather(*waiting)
    assert on_disk(s.path) == [r["id"] for r in results]


async def test_a_failed_group_commit_writes_none_of_it_and_fails_every_put(spool: Spool) -> None:
    results = [result(n) for n in range(50)]
    with sqlite3.connect(spool.path) as db:  # stands in for a full disk half-way through the group
        db.execute(f"CREATE TRIGGER boom BEFORE INSERT ON results WHEN NEW.id = '{results[30]['id']}' "
                   "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    outcomes = await asyncio.gather(*(spool.put(r) for r in results), return_exceptions=True)
    assert all(isinstance(o, sqlite3.DatabaseError) for o in outcomes), outcomes
    assert on_disk(spool.path) == []
    assert spool.count == 0
    with sqlite3.connect(spool.path) as db:
        db.execute("DROP TRIGGER boom")
    await spool.put(results[0])  # the spool still works afterwards
    assert on_disk(spool.path) == [results[0]["id"]]


WRITER = r"""
import asyncio, sys, uuid
from agent.spool import Spool

async def main():
    s = Spool(sys.argv[1], max_bytes=64 * 1024**2, max_age=86400)
    await s.open()
    async def one(n):
        rid = uuid.uuid4().hex
        await s.put({"id": rid, "n": n, "pad": "x" * 200})
        print(rid, flush=True)  # acknowledged: put returned, so it must be on disk
    n = 0
    while True:
        await asyncio.gather(*(one(n + k) for k in range(37)))
        n += 37

asyncio.run(main())
"""


def test_kill_9_loses_nothing_acknowledged_and_leaves_no_half_written_row(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    acked = []
    try:
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= 3000:
                break
        os.kill(proc.pid, signal.SIGKILL)
        acked.extend(line.strip() for line in proc.stdout)  # what it printed before it died
    finally:
        proc.kill()
        proc.wait()
    assert len(acked) >= 3000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT id, payload FROM results").fetchall()
    stored = {rid for rid, _ in rows}
    assert set(acked) <= stored
    assert all(payload.endswith('"}') for _, payload in rows)  # whole rows only
