"""Monthly partitions of the results table on PostgreSQL (migration 0012).

`results` is partitioned by range of `slot`, one partition a UTC month (`results_2026_12`), plus a
default partition (`results_default`) for any slot no month partition covers (imports of old
evidence, rows of tests and benches far from today): an insert never fails for want of a
partition. `slot` is the key because everything that reads or expires results selects by it:
the evaluator and reports read a check's slots in a range, ingest refuses results by the age of
their slot, retention expires by slot; so every one of those reads is pruned to its months, and
a month whose slots all passed `retention.raw` goes whole.

1. `ensure_partitions` keeps the months that ingest can write to created ahead (at start-up and
   from the retention job): from the month `ingest.max_result_age` (at least one month) back to
   two months ahead. Ingest thus never waits for DDL, and a slot in a month retention dropped
   is older than `retention.raw`, which exceeds `ingest.max_result_age`: it is refused as too old
   before it reaches the database.
2. `expire_partitions` (the retention job, under its lease) summarises each month wholly older
   than `retention.raw` into round summaries, in transactions of bounded size, then detaches and
   drops its partition: no row-by-row delete, no bloat. The rows of the month the cutoff falls
   in (and old rows in the default partition) are still summarised and deleted row by row
   (store.roll_up_and_expire), as on SQLite. A partition that cannot be dropped now (its lock)
   defers all of it to the next run, so that a whole month is never deleted row by row.

On SQLite, or on a PostgreSQL database whose results table is not partitioned, both do nothing.
DDL on the parent takes locks that ingest would queue behind, so each such transaction waits at
most LOCK_TIMEOUT for them and gives up (tried again at the next run); collectors sharing the
database take an advisory lock, so that only one of them changes partitions at a time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collector import store

log = logging.getLogger("uptime.collector.partitions")

PARENT = "results"
DEFAULT_PARTITION = "results_default"
_NAME = re.compile(r"^results_(\d{4})_(\d{2})$")
MONTHS_AHEAD = 2   # months after the current one kept created, so that ingest never waits for DDL
MONTHS_BEHIND = 1  # at least this many months before the current one (late results, agent spools)
# How long DDL on the parent waits for its lock: a DETACH waiting behind a long read would make
# every ingest queue behind it. Given up and tried again at the next retention run.
LOCK_TIMEOUT = "5s"
# pg_advisory_xact_lock key shared by every collector on the database (any fixed 64-bit number):
# one of them at a time creates or drops partitions.
ADVISORY_LOCK = 0x7570_7469_6D65_0012
SUMMARY_ROWS = 200_000  # raw rows summarised per transaction when a month is expired


def month_of(moment: datetime) -> datetime:
    """The first instant of the UTC month `moment` falls in."""
    moment = moment.astimezone(timezone.utc)
    return datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)


def months_from(first: datetime, last: datetime) -> list[datetime]:
    """Every month from the one `first` falls in to the one `last` falls in, both included."""
    out, month, end = [], month_of(first), month_of(last)
    while month <= end:
        out.append(month)
        month = add_months(month, 1)
    return out


def partition_name(month: datetime) -> str:
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def month_of_partition(name: str) -> datetime | None:
    found = _NAME.match(name)
    if found is None:
        return None
    return datetime(int(found[1]), int(found[2]), 1, tzinfo=timezone.utc)


def _bound(moment: datetime) -> str:
    # an explicit UTC offset: the bound does not depend on the session's TimeZone
    return f"'{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}+00'"


def bounds_sql(month: datetime) -> str:
    return f"FROM ({_bound(month)}) TO ({_bound(add_months(month, 1))})"


def wanted_months(now: datetime, *, max_result_age: float, retention_raw: float | None) -> list[datetime]:
    """The months ingest can write to: from `max_result_age` (at least MONTHS_BEHIND months) ago
    to MONTHS_AHEAD months ahead, less the months already wholly older than `retention_raw`
    (retention would drop them again; None: none is)."""
    first = min(add_months(month_of(now), -MONTHS_BEHIND), month_of(now - timedelta(seconds=max_result_age)))
    months = months_from(first, add_months(month_of(now), MONTHS_AHEAD))
    if retention_raw is None:
        return months
    cutoff = now - timedelta(seconds=retention_raw)
    return [m for m in months if add_months(m, 1) > cutoff]


async def is_partitioned(session: AsyncSession) -> bool:
    """True on PostgreSQL when `results` is a partitioned table (migration 0012 ran)."""
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return False
    kind = await session.scalar(text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)"), {"t": PARENT})
    return kind == "p"


async def attached_months(session: AsyncSession) -> dict[datetime, str]:
    """The month partitions attached to `results` (month -> table name)."""
    names = await session.scalars(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:t)"), {"t": PARENT})
    out = {}
    for name in names:
        month = month_of_partition(name)
        if month is not None:
            out[month] = name
    return out


async def _lock(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


async def create_month(session: AsyncSession, month: datetime) -> None:
    """Create and attach the partition of `month`, moving into it the rows of that month the
    default partition holds (in the caller's transaction, which must hold the advisory lock).

    Made as a table of its own and then attached: ATTACH takes a lock on `results` that does not
    stop inserts (CREATE TABLE ... PARTITION OF would). The default partition is locked first,
    so that no insert puts a row of the month there between the move and the attach."""
    name = partition_name(month)
    await session.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
    await session.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    lo, hi = month, add_months(month, 1)
    moved = await session.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE slot >= :lo AND slot < :hi RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved"), {"lo": lo, "hi": hi})
    await session.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES {bounds_sql(month)}"))
    if moved.rowcount:
        log.info("partition %s: %d results moved in from %s", name, moved.rowcount, DEFAULT_PARTITION)


async def ensure_partitions(sessionmaker: async_sessionmaker, now: datetime, *, max_result_age: float,
                            retention_raw: float) -> list[str]:
    """Create the missing partitions of `wanted_months` (one transaction); the names created.
    A lock not obtained within LOCK_TIMEOUT is logged and left to the next run: the months
    ahead give it two months to succeed."""
    async with sessionmaker() as session:
        if not await is_partitioned(session):
            return []
        try:
            await _lock(session)
            have = await attached_months(session)
            created = []
            for month in wanted_months(now, max_result_age=max_result_age, retention_raw=retention_raw):
                if month not in have:
                    await create_month(session, month)
                    created.append(partition_name(month))
            await session.commit()
        except DBAPIError as err:
            if not _lock_timeout(err):
                raise
            await session.rollback()
            log.warning("partitions of %s not created now (a lock was not free within %s); tried again at the "
                        "next retention run", PARENT, LOCK_TIMEOUT)
            return []
    if created:
        log.info("partitions created: %s", ", ".join(created))
    return created


@dataclass(frozen=True)
class Expired:
    partitions: tuple[str, ...]  # dropped
    results: int                 # raw results they held, summarised first
    # a partition could not be dropped now (its lock): the caller leaves the rows before the
    # cutoff for the next run rather than deleting that month row by row
    deferred: bool = False


async def expire_partitions(sessionmaker: async_sessionmaker, cutoff: datetime,
                            rows_per_transaction: int | None = None) -> Expired:
    """Summarise and drop every month partition whose whole month is older than `cutoff`.

    1. Each check's rows of the month are summarised per round (store.summarise_rounds, merging
       with summaries already there, so a run cut short and done again counts nothing twice),
       in transactions of at most about `rows_per_transaction` rows.
    2. Once all are summarised: DETACH and DROP the partition in one transaction (a month is
       never dropped before its summaries are committed)."""
    async with sessionmaker() as session:
        if not await is_partitioned(session):
            return Expired((), 0)
        months = sorted(m for m in await attached_months(session) if add_months(m, 1) <= cutoff)
    limit = rows_per_transaction or SUMMARY_ROWS
    dropped: list[str] = []
    total = 0
    for month in months:
        name = partition_name(month)
        summarised = await _summarise_partition(sessionmaker, name, limit)
        async with sessionmaker() as session:
            try:
                await _lock(session)
                await session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
                await session.execute(text(f"DROP TABLE {name}"))
                await session.commit()
            except DBAPIError as err:
                if not _lock_timeout(err):
                    raise
                await session.rollback()
                log.warning("partition %s summarised but not dropped now (a lock was not free within %s); "
                            "dropped at the next retention run", name, LOCK_TIMEOUT)
                return Expired(tuple(dropped), total, deferred=True)
        dropped.append(name)
        total += summarised  # rows of a partition not dropped are counted by whoever removes them
        log.info("retention: partition %s (slots of %s) summarised per round and dropped", name, f"{month:%Y-%m}")
    return Expired(tuple(dropped), total)


async def _summarise_partition(sessionmaker: async_sessionmaker, name: str, limit: int) -> int:
    """Round summaries for every row of one month partition; the rows read. Each check's rows are
    read in pages in the order of the (check, slot, agent) unique index, each page summarised and
    committed; a slot split over two pages is merged into the summary the first one wrote."""
    async with sessionmaker() as session:
        checks = list((await session.scalars(text(f'SELECT DISTINCT "check" FROM {name}'))).all())
    total = 0
    for check in checks:
        after: tuple[datetime, str] | None = None
        while True:
            async with sessionmaker() as session:
                rows = await _page(session, name, check, after, limit)
                if rows:
                    await store.summarise_rounds(session, check, rows)
                    await session.commit()
            total += len(rows)
            if len(rows) < limit:
                break
            after = (rows[-1][0], rows[-1][1])
    return total


async def _page(session: AsyncSession, name: str, check: str, after: tuple[datetime, str] | None,
                limit: int) -> list[tuple[Any, ...]]:
    where = '"check" = :check'
    params: dict[str, Any] = {"check": check, "limit": limit}
    if after is not None:
        where += " AND (slot, agent_id) > (:slot, :agent)"
        params.update(slot=after[0], agent=after[1])
    result = await session.execute(text(
        f'SELECT slot, agent_id, ok, degraded FROM {name} WHERE {where} ORDER BY slot, agent_id LIMIT :limit'), params)
    return [tuple(r) for r in result.all()]


def _lock_timeout(err: DBAPIError) -> bool:
    code = getattr(err.orig, "sqlstate", None) or getattr(getattr(err.orig, "__cause__", None), "sqlstate", None)
    return code == "55P03" or "lock timeout" in str(err).lower()


def include_in_comparison(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's `include_object` hook for comparing the models with a migrated database: the
    models describe `results` as SQLite has it; on PostgreSQL its partitions are tables of their
    own, and its unique result id holds the partition key (migration 0012). Everything else is
    compared."""
    if type_ == "table" and reflected and compare_to is None and name is not None:
        return not (name == DEFAULT_PARTITION or _NAME.match(name))
    if type_ == "unique_constraint" and name == "uq_results_agent_id_result_id":
        stored = obj if reflected else compare_to
        return stored is None or "slot" not in {c.name for c in stored.columns}
    return True
