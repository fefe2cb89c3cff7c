"""The schema exists only through migrations: upgrade from empty, downgrade, upgrade again, and no
difference between the models and the migrated schema (Alembic's autogenerate comparison)."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from collector import migrate
from collector.db import Base, make_engine


async def _inspect(url: str):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
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
