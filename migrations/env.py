"""Alembic environment: async engines for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from collector.db import Base
from collector.partitions import include_in_comparison

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # Batch mode lets SQLite alter tables (it rebuilds them); PostgreSQL ignores it.
    # on PostgreSQL `results` is partitioned by month: its partitions are not tables of the models
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      include_object=include_in_comparison)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        await connectable.run_sync(do_run_migrations)
        return
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
