"""Shared fixtures: databases on both back ends.

Every storage test runs on SQLite and on the machine's real PostgreSQL (127.0.0.1:5432, trust
authentication); each test creates its own database and drops it afterwards. Set
UPTIME_TEST_POSTGRES to another server's base URL. Where no PostgreSQL answers, the PostgreSQL
variants are skipped with the reason shown, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest

POSTGRES = os.environ.get("UPTIME_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


async def _admin_connection():
    return await asyncpg.connect(f"{POSTGRES}/postgres", timeout=5)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}"
        return
    try:
        admin = await _admin_connection()
    except (OSError, asyncpg.PostgresError) as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {err}")
    name = f"uptime_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"{POSTGRES.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
