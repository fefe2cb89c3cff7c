"""A PostgreSQL server of the test's own, run inside a lab host (`Postgres`).

It needs root, runuser, a `postgres` user and the server binaries of a Debian-layout
installation (/usr/lib/postgresql/*/bin: POSTGRES_TOOLS); without them
`require_postgres_server` skips the scenario, or fails it under CI (see `netlab.lab.require`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from .lab import Host, require, sh


POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_isready", "psql")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout) that has every
    program `Postgres` runs (POSTGRES_TOOLS), or None."""
    found = sorted((d for d in Path("/usr/lib/postgresql").glob("*/bin")
                    if all(os.access(d / tool, os.X_OK) for tool in POSTGRES_TOOLS)),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def postgres_unavailable() -> str | None:
    """Why no test PostgreSQL cluster can be made here, or None."""
    import pwd

    if os.geteuid() != 0:
        return "a test PostgreSQL cluster is run as the postgres user: that needs root"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user to run a test PostgreSQL cluster as"
    if postgres_bin() is not None:
        return None
    return (f"no PostgreSQL server installed: no /usr/lib/postgresql/*/bin with {', '.join(POSTGRES_TOOLS)} "
            "(Debian/Ubuntu: apt-get install postgresql)")


def require_postgres_server() -> None:
    """The PostgreSQL server binaries `Postgres` runs (initdb, pg_ctl, postgres, ...)."""
    reason = postgres_unavailable()
    require(reason is None, reason)


class Postgres:
    """A PostgreSQL cluster made by the test (initdb into a temporary folder as the `postgres`
    user, trust authentication) and run inside one lab host, listening on 127.0.0.1:5432 there
    and on a Unix socket in its folder, through which the test process reaches it."""

    def __init__(self, host: Host, logs: Path, port: int = 5432, database: str = "uptime"):
        self.host = host
        self.logs = logs
        self.port = port
        self.database = database
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
        self.root = Path(tempfile_mkdtemp("upf-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """The collector's database URL, valid inside `host`."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def init(self) -> Postgres:
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        sh("runuser", "-u", "postgres", "--", str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
           "-U", "postgres", "--no-sync", "-E", "UTF8", timeout=120)
        return self

    def start(self, timeout: float = 30) -> None:
        self.restarts += 1
        self.proc = self.host.popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "max_connections=60"],
            self.logs / "postgres.log", user="postgres")
        deadline = time.monotonic() + timeout
        while sh(str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port),
                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{(self.logs / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self, mode: str = "immediate") -> None:
        """`pg_ctl stop -m immediate` is a crash as far as clients and recovery are concerned."""
        sh("runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "stop", "-D", str(self.data),
           "-m", mode, "-w", check=False, timeout=60)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def psql(self, sql: str, database: str | None = None) -> list[list[str]]:
        out = sh(str(self.bin / "psql"), "-X", "-q", "-At", "-F", "\t", "-h", str(self.socket_dir), "-p", str(self.port),
                 "-U", "postgres", "-d", database or self.database, "-c", sql, timeout=60).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def create_database(self) -> None:
        self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def tempfile_mkdtemp(prefix: str) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return path
