"""The schema exists only through migrations: upgrade from empty, downgrade, upgrade again, and no
difference between the models and the migrated schema (Alembic's autogenerate comparison)."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from collector import migrate
from collector.db import Base, make_engine
from collector.partitions import include_in_comparison


async def _inspect(url: str):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            # on PostgreSQL results is partitioned (migration 0012): its partitions are not models
            opts = {"include_object": include_in_comparison}
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c, opts=opts), Base.metadata))
    finally:
        await engine.dispose()
    return tables, diff


async def test_upgrade_downgrade_upgrade_leaves_no_difference(database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    tables, diff = await _inspect(database_url)
    assert {"agents", "checks", "results", "outage_windows", "maintenance"} <= tables
    assert diff == []
    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    tables, _ = await _inspect(database_url)
    assert tables <= {"alembic_version"}
    await asyncio.to_thread(migrate.upgrade, database_url)
    tables, diff = await _inspect(database_url)
    assert "results" in tables
    assert diff == []


async def _execute(url: str, *statements) -> list:
    engine = make_engine(url)
    out = []
    try:
        async with engine.begin() as conn:
            for stmt in statements:
                result = await conn.execute(stmt)
                out.append(result.all() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return out


def _vote(agent: str, slot, ok: bool, rid: str) -> dict:
    return {"result_id": rid, "agent_id": agent, "check": "web", "slot": slot, "started": slot,
            "ok": ok, "latency_ms": None, "status_code": None, "error": None if ok else "timeout", "detail": None,
            "received_at": slot}


async def test_upgrading_a_database_with_double_votes_keeps_the_first_and_sets_the_others_aside(
        database_url: str, caplog) -> None:
    """Before 0005 an agent could vote again in a slot (a success erasing its failure). The first
    vote stored (lowest row id) stays; the later ones move to set_aside_results, counted in the
    log; a downgrade brings them back."""
    from datetime import datetime, timedelta, timezone

    import pytest
    from sqlalchemy import insert, select, text

    from collector.db import Agent, Result

    await asyncio.to_thread(migrate.upgrade, database_url, "0004")
    s0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    s1 = s0 + timedelta(minutes=1)
    votes = [  # row ids 1..6, in this order
        _vote("a1", s0, False, "a1-s0-failed"),
        _vote("a2", s0, False, "a2-s0-failed"),
        _vote("a1", s1, True, "a1-s1-ok"),
        _vote("a1", s0, True, "a1-s0-rewrite"),   # a1 takes its failure back
        _vote("a1", s0, True, "a1-s0-rewrite-2"),
        _vote("a2", s1, True, "a2-s1-ok"),
    ]
    agents = [{"id": a, "token_sha256": None, "created_at": s0} for a in ("a1", "a2")]
    await _execute(database_url, insert(Agent.__table__).values(agents), *(insert(Result.__table__).values(v) for v in votes))
    with caplog.at_level("INFO", logger="uptime.collector.migrate"):
        await asyncio.to_thread(migrate.upgrade, database_url, "0005")
    assert "2 later votes in a slot their agent had already voted in were moved to the table set_aside_results" in caplog.text

    kept, aside = await _execute(
        database_url,
        select(Result.id, Result.result_id).order_by(Result.id),
        text("SELECT id, result_id, kept_id, reason FROM set_aside_results ORDER BY id"))
    assert [tuple(r) for r in kept] == [(1, "a1-s0-failed"), (2, "a2-s0-failed"), (3, "a1-s1-ok"), (6, "a2-s1-ok")]
    assert [tuple(r) for r in aside] == [(4, "a1-s0-rewrite", 1, "double_vote"), (5, "a1-s0-rewrite-2", 1, "double_vote")]
    _tables, diff = await _inspect(database_url)
    # the models hold the constraints 0005 made (the columns 0008 adds come later)
    later = {("results", "degraded"), ("results", "extra")}
    assert [d for d in diff if "results" in str(d)
            and not (d[0] == "add_column" and (d[2], d[3].name) in later)] == []

    # the schema now refuses a second vote, and lets another agent use a1's id
    from sqlalchemy.exc import IntegrityError
    with pytest.raises(IntegrityError):
        await _execute(database_url, insert(Result.__table__).values(_vote("a1", s0, True, "a1-s0-again")))
    await _execute(database_url, insert(Result.__table__).values(_vote("a2", s0 + timedelta(minutes=2), True, "a1-s1-ok")))
    # ... which 0004 cannot hold: the downgrade is refused and changes nothing
    with pytest.raises(RuntimeError, match="1 result ids are each held by more than one result"):
        await asyncio.to_thread(migrate.downgrade, database_url, "0004")
    await _execute(database_url, text("DELETE FROM results WHERE agent_id = 'a2' AND result_id = 'a1-s1-ok'"))

    await asyncio.to_thread(migrate.downgrade, database_url, "0004")
    [back] = await _execute(database_url, select(Result.result_id, Result.ok).where(Result.agent_id == "a1",
                                                                                     Result.slot == s0).order_by(Result.id))
    assert [tuple(r) for r in back] == [("a1-s0-failed", False), ("a1-s0-rewrite", True), ("a1-s0-rewrite-2", True)]
    caplog.clear()
    with caplog.at_level("INFO", logger="uptime.collector.migrate"):
        await asyncio.to_thread(migrate.upgrade, database_url, "0005")
    assert "2 later votes" in caplog.text
