"""Results partitioned by month on PostgreSQL (migration 0012, collector.partitions): the migration
moves every stored row into the partition of its month and back, ingest writes into the month's
partition, retention summarises a month wholly past `retention.raw` and drops its partition while
the month the cutoff falls in is still summarised and deleted row by row. On the machine's real
PostgreSQL; on SQLite everything stays as it was."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from collector import jobs, migrate, partitions, store
from collector.app import create_app
from collector.config import parse_config
from collector.db import Agent, Result, RoundSummary, make_engine
from collector.partitions import add_months, month_of, partition_name
from collector.service import CollectorState
from protocol.timestamps import rfc3339

pg_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
AGENTS = ("a1", "a2", "a3")
TOKENS = {a: f"token-{a}-0123456789" for a in AGENTS}
DAY = 86400.0
INSERT = 'INSERT INTO results (result_id, agent_id, "check", slot, started, ok, received_at) '


def make_state(database_url: str, *, raw: float = 90 * DAY, max_age: float = 1 * DAY) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "evaluation": {"interval": "1h"},
        "ingest": {"max_result_age": max_age},
        "retention": {"raw": raw, "interval": "1h"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"},
                   {"name": "dns", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
    }, "test"))


def row(agent: str, check: str, slot: datetime, ok: bool, rid: str | None = None) -> dict:
    return {"result_id": rid or f"{agent}-{check}-{slot:%Y%m%d%H%M}", "agent_id": agent, "check": check,
            "slot": slot, "started": slot, "ok": ok, "latency_ms": 1.0 if ok else None, "status_code": None,
            "error": None if ok else "timeout", "detail": None, "received_at": slot, "degraded": False}


async def sql(url: str, statement: str, **params) -> list[tuple]:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return [tuple(r) for r in result.all()] if result.returns_rows else []
    finally:
        await engine.dispose()


async def where_rows_are(url: str) -> dict[str, str]:
    """result id -> the table (partition) that holds the row."""
    return dict(await sql(url, "SELECT result_id, tableoid::regclass::text FROM results"))


async def attached(url: str) -> list[str]:
    rows = await sql(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "WHERE i.inhparent = 'results'::regclass ORDER BY c.relname")
    return [r[0] for r in rows]


async def exists(url: str, table: str) -> bool:
    return bool(await sql(url, "SELECT 1 FROM pg_class WHERE relname = :t", t=table))


@pg_only
async def test_the_migration_moves_three_months_of_results_into_their_partitions_and_back(database_url) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url, "0011")
    this = month_of(datetime.now(timezone.utc))
    months = [add_months(this, -2), add_months(this, -1), this]
    ancient = add_months(this, -40)  # past the months the migration makes: the default partition
    rows = [row(a, "web", m + timedelta(days=3, minutes=i), i % 2 == 0)
            for m in months for a in AGENTS[:2] for i in range(3)]
    rows.append(row("a1", "web", ancient + timedelta(hours=1), True, rid="ancient"))
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Agent.__table__), [{"id": a, "created_at": this} for a in AGENTS])
            await conn.execute(insert(Result.__table__), rows)
    finally:
        await engine.dispose()
    before = dict(await sql(database_url, "SELECT result_id, id FROM results"))

    await asyncio.to_thread(migrate.upgrade, database_url, "0012")
    assert await sql(database_url, "SELECT relkind::text FROM pg_class WHERE relname = 'results'") == [("p",)]
    held = await where_rows_are(database_url)
    assert set(held) == {r["result_id"] for r in rows}  # every row, nothing twice
    for r in rows:
        expected = "results_default" if r["result_id"] == "ancient" else partition_name(month_of(r["slot"]))
        assert held[r["result_id"]] == expected, r["result_id"]
    assert dict(await sql(database_url, "SELECT result_id, id FROM results")) == before  # row ids kept
    # the months ingest writes to are there, two months ahead included
    assert {partition_name(add_months(this, n)) for n in (-2, -1, 0, 1, 2)} <= set(await attached(database_url))
    # the id sequence moved with the column: new rows take later ids, and it outlives the old table
    [(new_id,)] = await sql(database_url, INSERT + "VALUES ('new', 'a3', 'web', now(), now(), true, now()) RETURNING id")
    assert new_id > max(before.values())
    assert await sql(database_url, "SELECT pg_get_serial_sequence('results', 'id')") == [("public.results_id_seq",)]
    # one vote per agent, check and slot still holds across the partitioned table
    with pytest.raises(IntegrityError, match="duplicate key value violates unique constraint"):
        await sql(database_url, INSERT + "SELECT 'other', agent_id, \"check\", slot, slot, ok, slot FROM results "
                                         "WHERE result_id = 'ancient'")

    # an id an agent holds in two slots is what 0011 cannot hold: refused, nothing changed
    await sql(database_url, INSERT + "VALUES ('new', 'a3', 'web', now() - interval '1 day', now(), true, now())")
    with pytest.raises(RuntimeError, match="1 result ids are each held by one agent in more than one slot"):
        await asyncio.to_thread(migrate.downgrade, database_url, "0011")
    assert await sql(database_url, "SELECT count(*) FROM results") == [(len(rows) + 2,)]
    await sql(database_url, "DELETE FROM results WHERE result_id = 'new'")

    await asyncio.to_thread(migrate.downgrade, database_url, "0011")
    assert await sql(database_url, "SELECT relkind::text FROM pg_class WHERE relname = 'results'") == [("r",)]
    assert not await exists(database_url, "results_default")
    assert set((await where_rows_are(database_url)).values()) == {"results"}
    assert dict(await sql(database_url, "SELECT result_id, id FROM results")) == before
    assert await sql(database_url, "SELECT pg_get_serial_sequence('results', 'id')") == [("public.results_id_seq",)]
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert len(await where_rows_are(database_url)) == len(rows)


@pg_only
async def test_results_land_in_the_partition_of_their_month_and_start_up_makes_the_months_ingest_accepts(
        database_url, aiohttp_client) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    now = datetime.now(timezone.utc)
    this = month_of(now)
    far_back = month_of(now - timedelta(days=70))  # two or three months back
    await sql(database_url, f"ALTER TABLE results DETACH PARTITION {partition_name(add_months(this, 1))}")
    await sql(database_url, f"DROP TABLE {partition_name(add_months(this, 1))}")
    state = make_state(database_url, raw=80 * DAY, max_age=70 * DAY)
    client = await aiohttp_client(create_app(state))  # start-up: migrate, sync config, partitions
    names = set(await attached(database_url))
    assert {partition_name(m) for m in partitions.months_from(far_back, add_months(this, 2))} <= names

    slot = (now - timedelta(minutes=5)).replace(second=0, microsecond=0)
    result = {"id": uuid.uuid4().hex, "check": "web", "slot": rfc3339(slot), "started": rfc3339(slot), "ok": True,
              "latency_ms": 2.0, "status_code": 200}
    resp = await client.post("/api/v1/results", json={"agent": "a1", "results": [result]},
                             headers={"Authorization": f"Bearer {TOKENS['a1']}"})
    assert resp.status == 200, await resp.text()
    # a result of next month (through the store: ingest refuses the future) lands in its partition
    next_month = add_months(this, 1) + timedelta(days=2)
    async with state.sessionmaker() as session:
        outcome = await store.insert_results(session, "a2", [row("a2", "web", next_month, False)])
        await session.commit()
    assert outcome.accepted == 1
    held = await where_rows_are(database_url)
    assert held[result["id"]] == partition_name(this)
    assert held[f"a2-web-{next_month:%Y%m%d%H%M}"] == partition_name(add_months(this, 1))
    assert "results_default" not in held.values()


@pg_only
async def test_a_month_made_later_takes_its_rows_from_the_default_partition(database_url) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    state = make_state(database_url)
    try:
        await state.sync_config()
        later = add_months(month_of(datetime.now(timezone.utc)), 6)
        async with state.sessionmaker() as session:
            await store.insert_results(session, "a1", [row("a1", "web", later + timedelta(hours=5), True)])
            await session.commit()
        assert set((await where_rows_are(database_url)).values()) == {"results_default"}
        # two collectors at once: the advisory lock lets one make it, the other finds it made
        async def make() -> None:
            async with state.sessionmaker() as session:
                await partitions._lock(session)
                if later not in await partitions.attached_months(session):
                    await partitions.create_month(session, later)
                await session.commit()
        await asyncio.gather(make(), make())
        assert set((await where_rows_are(database_url)).values()) == {partition_name(later)}
        assert await sql(database_url, "SELECT count(*) FROM results_default") == [(0,)]
    finally:
        await state.engine.dispose()


@pg_only
async def test_retention_drops_a_whole_expired_month_and_deletes_the_rows_of_the_month_it_cuts(
        database_url, monkeypatch) -> None:
    """The month before the cutoff's goes whole (its partition dropped, its rounds summarised
    first, several pages of rows per check); the cutoff's month loses its rows before the cutoff
    row by row, as before; what is newer stays."""
    monkeypatch.setattr(partitions, "SUMMARY_ROWS", 5)  # pages of 5 rows: slots split over pages
    await asyncio.to_thread(migrate.upgrade, database_url)
    now = datetime.now(timezone.utc)
    expired = add_months(month_of(now), -3)
    cut = add_months(expired, 1)
    cutoff = cut + timedelta(days=10)
    state = make_state(database_url, raw=(now - cutoff).total_seconds())
    try:
        await state.sync_config()
        async with state.sessionmaker() as session:  # the months the data needs (ingest has no say here)
            await partitions._lock(session)
            for month in (expired, cut):
                if month not in await partitions.attached_months(session):
                    await partitions.create_month(session, month)
            await session.commit()
        old = [expired + timedelta(days=4, minutes=i) for i in range(6)]
        partial = [cut + timedelta(days=2, minutes=i) for i in range(2)]
        kept = [cutoff + timedelta(hours=1)]
        votes = {  # agent -> ok per slot; a3 fails the even minutes of the expired month
            a: [row(a, check, s, not (a == "a3" and n % 2 == 0)) for check in ("web", "dns")
                for n, s in enumerate(old + partial + kept)] for a in AGENTS}
        async with state.sessionmaker() as session:
            for agent, rows in votes.items():
                await store.insert_results(session, agent, rows)
            await session.commit()
        assert await exists(database_url, partition_name(expired))

        await jobs.retention(state)  # under the retention lease, as the scheduler runs it

        assert not await exists(database_url, partition_name(expired))
        assert partition_name(expired) not in await attached(database_url)
        assert partition_name(cut) in await attached(database_url)  # not whole: kept, its old rows deleted
        async with state.sessionmaker() as session:
            remaining = (await session.execute(select(Result.slot).distinct())).scalars().all()
            assert remaining == kept
            summaries = {(r.check, r.slot): r for r in (await session.scalars(select(RoundSummary))).all()}
        assert set(summaries) == {(c, s) for c in ("web", "dns") for s in old + partial}
        for n, s in enumerate(old):
            for check in ("web", "dns"):
                summary = summaries[(check, s)]
                assert summary.succeeded == (["a1", "a2"] if n % 2 == 0 else ["a1", "a2", "a3"])
                assert summary.failed == (["a3"] if n % 2 == 0 else [])
        assert state.leases.get("retention") is True
        # the next run finds nothing to do and makes no partition retention would drop again
        assert await state.expire_raw_results() == 0
        assert not await exists(database_url, partition_name(expired))
    finally:
        await state.engine.dispose()


@pg_only
async def test_a_month_whose_drop_waits_too_long_for_its_lock_is_dropped_at_the_next_run(
        database_url, monkeypatch) -> None:
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    await asyncio.to_thread(migrate.upgrade, database_url)
    now = datetime.now(timezone.utc)
    expired = add_months(month_of(now), -3)
    state = make_state(database_url, raw=(now - add_months(expired, 1)).total_seconds() - 3600)
    reader = make_engine(database_url)
    try:
        await state.sync_config()
        async with state.sessionmaker() as session:
            await partitions._lock(session)
            await partitions.create_month(session, expired)
            await session.commit()
        slot = expired + timedelta(days=1)
        async with state.sessionmaker() as session:
            await store.insert_results(session, "a1", [row("a1", "web", slot, True)])
            await session.commit()
        async with reader.connect() as conn:  # a long read of the month holds a lock DETACH must wait for
            await conn.execute(text(f"SELECT count(*) FROM {partition_name(expired)}"))
            # summarised, then left whole for the next run (not deleted row by row): nothing removed
            assert await state.expire_raw_results() == 0
            await conn.rollback()
        assert await exists(database_url, partition_name(expired))
        async with state.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Result)) == 1
            assert (await session.get(RoundSummary, ("web", slot))).succeeded == ["a1"]
        assert await state.expire_raw_results() == 1
        assert not await exists(database_url, partition_name(expired))
        async with state.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Result)) == 0
            assert (await session.get(RoundSummary, ("web", slot))).succeeded == ["a1"]
    finally:
        await reader.dispose()
        await state.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_results_stay_one_table_and_partition_upkeep_does_nothing(database_url) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    state = make_state(database_url)
    try:
        assert await state.ensure_result_partitions() == []
        expired = await partitions.expire_partitions(state.sessionmaker, datetime.now(timezone.utc))
        assert expired == partitions.Expired((), 0)
        names = await sql(database_url, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'results%'")
        assert names == [("results",)]
    finally:
        await state.engine.dispose()


@pytest.mark.parametrize("now, months", [
    (datetime(2026, 12, 3, tzinfo=timezone.utc), ["2026-11", "2026-12", "2027-01", "2027-02"]),
    (datetime(2026, 1, 31, 23, 59, tzinfo=timezone.utc), ["2025-12", "2026-01", "2026-02", "2026-03"]),
])
def test_the_months_kept_ready_run_from_last_month_to_two_ahead(now, months) -> None:
    got = partitions.wanted_months(now, max_result_age=1 * DAY, retention_raw=90 * DAY)
    assert [f"{m:%Y-%m}" for m in got] == months


def test_a_longer_ingest_age_reaches_further_back_but_never_into_expired_months() -> None:
    now = datetime(2026, 12, 3, tzinfo=timezone.utc)
    got = partitions.wanted_months(now, max_result_age=70 * DAY, retention_raw=80 * DAY)
    assert [f"{m:%Y-%m}" for m in got] == ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01", "2027-02"]
    short = partitions.wanted_months(now, max_result_age=1 * DAY, retention_raw=2 * DAY)
    assert [f"{m:%Y-%m}" for m in short] == ["2026-12", "2027-01", "2027-02"]  # November is past retention
