"""Durable local spool of results (stdlib sqlite3, WAL mode), between the probes and the shipper.

Every result is written here before any attempt to ship it, and leaves only when the collector
acknowledged it (`ack`), was refused for good (`reject`, moved to the `rejected` table), or a
bound was hit (oldest dropped first, counted in uptime_agent_spool_dropped_results_total and
logged). `max_bytes` bounds both tables together: over it, the oldest refused results go first
(reason `rejected_bytes`: they would never be shipped anyway), then the oldest unshipped ones
(reason `bytes`). All sqlite work runs on one worker thread of its own, so the event loop never blocks
on disk and the connection is used by one thread only. `put` group-commits: results put within
GROUP_WINDOW_SECONDS share one transaction, and each `put` returns only after its commit, so a
kill loses at most that window's unacknowledged results and never half a group.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from protocol.durations import format_duration, format_size
from agent.metrics import AgentMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,   -- shipping order
    id       TEXT NOT NULL UNIQUE,                -- the result's stable id (wire-protocol.md)
    spooled  REAL NOT NULL,                       -- unix time written, for max_age
    payload  TEXT NOT NULL                        -- the result as sent on the wire (JSON)
);
CREATE TABLE IF NOT EXISTS rejected (
    seq      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL,
    spooled  REAL NOT NULL,
    payload  TEXT NOT NULL,
    rejected REAL NOT NULL,                       -- unix time the collector refused it
    status   INTEGER NOT NULL,                    -- the HTTP status of the refusal
    error    TEXT NOT NULL                        -- the collector's {"error": ...}
);
"""
# How many rows one pass of the byte bound looks at when choosing what to drop.
DROP_SCAN_ROWS = 1000
# What a refused result weighs against max_bytes: its payload and the reason stored with it.
REJECTED_SIZE = "length(payload) + length(error)"
# Group commit (`put`): results put within this window, or this many, share one transaction.
# One transaction per result costs a thread hand-off and a WAL commit each; 20 ms is well under
# the one second of unprobed slots a killed agent is allowed to lose (tests/test_faults_kills.py).
GROUP_WINDOW_SECONDS = 0.020
GROUP_MAX_RESULTS = 500


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    result: dict[str, Any]


class Spool:
    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int,
        max_age: float,
        metrics: AgentMetrics | None = None,
    ):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._metrics = metrics
        self._db: sqlite3.Connection | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._count = 0
        self._bytes = 0
        self._rejected_bytes = 0
        # Results `put` but not yet committed, each with the future its caller waits on.
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._group_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{self.path.stem}")
        await self._run(self._open)
        self._publish()
        if self._count:
            log.info("spool %s: %d results from an earlier run wait to be shipped", self.path, self._count)
        await self.enforce_bounds()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed result survives a crash of the agent; only a power loss
        # can take the last few commits, an acceptable trade for one fsync per checkpoint.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._count, self._bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM results"
        ).fetchone()
        self._rejected_bytes = db.execute(f"SELECT coalesce(sum({REJECTED_SIZE}), 0) FROM rejected").fetchone()[0]
        self._db = db

    @property
    def is_open(self) -> bool:
        return self._worker is not None

    async def close(self) -> None:
        if self._worker is None:
            return
        # Everything already put is committed before the connection goes (its callers wait on it).
        await self.flush()
        await self._run(self._close)
        self._worker.shutdown(wait=True)
        self._worker = None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _transaction(self):
        """One explicit transaction. (The connection is in autocommit mode, where sqlite3's own
        `with connection:` begins nothing: every statement inside it would commit by itself, so
        a move between tables could half-happen and a bulk insert would commit row by row.)"""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            raise RuntimeError("spool is not open")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # --- results -------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Results waiting to be shipped (kept current by every operation)."""
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes of the results waiting to be shipped."""
        return self._bytes

    @property
    def rejected_bytes(self) -> int:
        """Bytes held by refused results (payload and error), also counted against max_bytes."""
        return self._rejected_bytes

    @property
    def total_bytes(self) -> int:
        """What `max_bytes` bounds: both tables."""
        return self._bytes + self._rejected_bytes

    def _over_bytes(self) -> bool:
        return self._bytes + self._rejected_bytes > self.max_bytes

    async def put(self, result: dict[str, Any]) -> None:
        """Store one result durably; returns only once the transaction holding it has committed
        (then the spool is also within its bounds). Results put within GROUP_WINDOW_SECONDS of
        each other (at most GROUP_MAX_RESULTS) are committed together, in put order."""
        if self._worker is None:
            raise RuntimeError("spool is not open")
        payload = json.dumps(result, separators=(",", ":"))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((result["id"], payload, done))
        if len(self._pending) >= GROUP_MAX_RESULTS:
            self._start_flush()
        elif self._group_timer is None:
            self._group_timer = loop.call_later(GROUP_WINDOW_SECONDS, self._start_flush)
        # shield: a caller cancelled while waiting must not cancel the commit others share
        await asyncio.shield(done)

    async def flush(self) -> None:
        """Commit every result put so far (and wait for group commits already under way)."""
        if self._pending:
            self._start_flush()
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def _start_flush(self) -> None:
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._commit_group(batch), name=f"spool-commit-{self.path.stem}")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _commit_group(self, batch: list[tuple[str, str, asyncio.Future[None]]]) -> None:
        # The worker runs one call at a time in submission order, so groups commit in put order
        # and never interleave with an ack/reject/peek.
        try:
            await self._run(self._put_many, [(result_id, payload) for result_id, payload, _ in batch])
        except BaseException as exc:  # rolled back whole: nobody in the group is told it is stored
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._publish()
        try:
            if self._over_bytes():
                await self._run(self._drop_for_bytes)
                self._publish()
        except Exception:  # the group is committed all the same; the next write retries the bound
            log.exception("spool %s: enforcing max_bytes after a group commit failed", self.path)
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)

    async def put_many(self, results: list[dict[str, Any]]) -> int:
        """Store several results in one transaction (a bulk import, or a test filling the spool);
        then keep the spool within its bounds. Returns how many were new (ids already here are
        ignored, as by `put`)."""
        await self.flush()  # results put before keep their place in shipping order
        rows = [(r["id"], json.dumps(r, separators=(",", ":"))) for r in results]
        inserted = await self._run(self._put_many, rows)
        self._publish()
        if self._over_bytes():
            await self._run(self._drop_for_bytes)
            self._publish()
        return inserted

    def _put_many(self, rows: list[tuple[str, str]]) -> int:
        now = time.time()
        before = self._db.total_changes
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO results (id, spooled, payload) VALUES (?, ?, ?)",
                ((result_id, now, payload) for result_id, payload in rows),
            )
        inserted = self._db.total_changes - before
        if inserted == len(rows):
            self._count += inserted
            self._bytes += sum(len(payload) for _, payload in rows)
        else:  # some ids were here already: count afresh rather than guess which
            self._count, self._bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM results"
            ).fetchone()
        return inserted


    async def peek(self, limit: int) -> list[Spooled]:
        """The oldest `limit` results, in order, without removing them."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT seq, payload FROM results ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        )
        return [Spooled(seq, json.loads(payload)) for seq, payload in rows]

    async def ack(self, seqs: list[int]) -> int:
        """Delete results the collector acknowledged; return how many were still here."""
        deleted = await self._run(self._delete, seqs)
        self._publish()
        return deleted

    def _delete(self, seqs: list[int]) -> int:
        deleted = freed = 0
        with self._transaction():
            for chunk in _chunks(seqs, 500):
                marks = ",".join("?" * len(chunk))
                freed += self._db.execute(
                    f"SELECT coalesce(sum(length(payload)), 0) FROM results WHERE seq IN ({marks})", chunk
                ).fetchone()[0]
                deleted += self._db.execute(f"DELETE FROM results WHERE seq IN ({marks})", chunk).rowcount
        self._count -= deleted
        self._bytes -= freed
        return deleted

    async def reject(
        self, seqs: list[int], status: int, error: str, errors: dict[int, str] | None = None
    ) -> int:
        """Move results the collector refused for good to the `rejected` table, each with
        `error`, or with its own message where `errors` (seq -> message) names one; then keep
        the spool within max_bytes (refused results count against it too)."""
        own = {seq: message for seq, message in (errors or {}).items() if message is not None}
        moved = await self._run(self._reject, seqs, status, error, own)
        self._publish()
        if self._over_bytes():
            await self._run(self._drop_for_bytes)
            self._publish()
        return moved

    def _reject(self, seqs: list[int], status: int, error: str, errors: dict[int, str]) -> int:
        now = time.time()
        moved = freed = added = 0
        with self._transaction():
            for chunk in _chunks(seqs, 500):
                marks = ",".join("?" * len(chunk))
                found = self._db.execute(
                    f"SELECT seq, length(payload) FROM results WHERE seq IN ({marks})", chunk
                ).fetchall()
                reasons = {seq: str(errors.get(seq, error))[:2000] for seq, _ in found}
                self._db.executemany(
                    "INSERT INTO rejected (seq, id, spooled, payload, rejected, status, error) "
                    "SELECT seq, id, spooled, payload, ?, ?, ? FROM results WHERE seq = ?",
                    [(now, status, reasons[seq], seq) for seq, _ in found],
                )
                freed += sum(size for _, size in found)
                added += sum(size + len(reasons[seq]) for seq, size in found)  # REJECTED_SIZE
                moved += self._db.execute(f"DELETE FROM results WHERE seq IN ({marks})", chunk).rowcount
        self._count -= moved
        self._bytes -= freed
        self._rejected_bytes += added
        return moved

    async def rejected(self) -> list[dict[str, Any]]:
        """The refused results with why, oldest first (for operators and tests)."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT payload, status, error, rejected FROM rejected ORDER BY seq"
            ).fetchall()
        )
        return [
            {"result": json.loads(payload), "status": status, "error": error, "rejected": when}
            for payload, status, error, when in rows
        ]

    # --- bounds --------------------------------------------------------------------------------

    async def enforce_bounds(self) -> None:
        """Drop results older than max_age, then the oldest until within max_bytes (refused
        results first, see `_drop_for_bytes`)."""
        await self._run(self._drop_for_age)
        if self._over_bytes():
            await self._run(self._drop_for_bytes)
        self._publish()

    def _drop_for_age(self) -> None:
        cutoff = time.time() - self.max_age
        with self._transaction():
            count, freed = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM results WHERE spooled < ?", (cutoff,)
            ).fetchone()
            if count:
                self._db.execute("DELETE FROM results WHERE spooled < ?", (cutoff,))
            # Refused results are kept for inspection, but no longer than unshipped ones.
            old_rejected, rejected_freed = self._db.execute(
                f"SELECT count(*), coalesce(sum({REJECTED_SIZE}), 0) FROM rejected WHERE rejected < ?", (cutoff,)
            ).fetchone()
            if old_rejected:
                self._db.execute("DELETE FROM rejected WHERE rejected < ?", (cutoff,))
        self._rejected_bytes -= rejected_freed
        if count:
            self._count -= count
            self._bytes -= freed
            self._dropped("age", count)
            log.warning(
                "spool %s: dropped %d results older than max_age %s, never shipped",
                self.path, count, format_duration(self.max_age),
            )
        if old_rejected:
            log.warning("spool %s: deleted %d rejected results older than max_age", self.path, old_rejected)

    def _drop_for_bytes(self) -> None:
        """Over max_bytes (both tables): delete the oldest refused results first, as they will
        never be shipped, then the oldest unshipped results; each kind counted and logged."""
        rejected, freed = self._drop_oldest("rejected", REJECTED_SIZE)
        self._rejected_bytes -= freed
        if rejected:
            self._dropped("rejected_bytes", rejected)
            log.warning(
                "spool %s: over max_bytes %s, deleted the %d oldest rejected results (refused by the "
                "collector, never to be shipped)",
                self.path, format_size(self.max_bytes), rejected,
            )
        dropped, freed = self._drop_oldest("results", "length(payload)")
        self._count -= dropped
        self._bytes -= freed
        if dropped:
            self._dropped("bytes", dropped)
            log.warning(
                "spool %s: over max_bytes %s, dropped the %d oldest results, never shipped",
                self.path, format_size(self.max_bytes), dropped,
            )

    def _drop_oldest(self, table: str, size: str) -> tuple[int, int]:
        """Delete the oldest rows of `table` until the spool is within max_bytes or the table is
        empty; (rows deleted, bytes freed), by `size` (an SQL expression over a row)."""
        deleted = freed = 0
        while self.total_bytes - freed > self.max_bytes:
            rows = self._db.execute(
                f"SELECT seq, {size} FROM {table} ORDER BY seq LIMIT ?", (DROP_SCAN_ROWS,)
            ).fetchall()
            if not rows:
                break
            excess, last = self.total_bytes - freed - self.max_bytes, None
            for seq, row_size in rows:
                freed += row_size
                excess -= row_size
                last = seq
                if excess <= 0:
                    break
            with self._transaction():
                deleted += self._db.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,)).rowcount
        return deleted, freed

    def _dropped(self, reason: str, count: int) -> None:
        if self._metrics is not None:
            self._metrics.spool_dropped.labels(reason=reason).inc(count)

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_results.set(self._count)


def _chunks(items: list[int], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
