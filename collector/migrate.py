"""Schema migrations through Alembic, callable from the CLI and from `serve` at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    _make_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


def _make_sqlite_folder(database_url: str) -> None:
    # SQLite makes the file, not its folder (`data/` of a fresh checkout)
    if database_url.startswith("sqlite") and "///" in database_url:
        path = database_url.split("///", 1)[1].partition("?")[0]
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str) -> None:
    # env.py runs its own event loop, so it needs a thread of its own.
    await asyncio.to_thread(upgrade, database_url)
