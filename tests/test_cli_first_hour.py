"""First-hour frictions of the collector's CLI, as a user meets them: one clear line and a
non-zero exit, never a traceback; a relative SQLite path means the same file from any folder."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHECK = {"name": "web", "type": "http", "url": "http://127.0.0.1:9/", "interval": "60s"}


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://root@127.0.0.1/uptime", "database_url: unsupported database 'mysql': use sqlite+aiosqlite:///PATH"),
    ("sqlite:///x.db", "write sqlite+aiosqlite:///PATH"),
    ("postgresql://u:secret@db.example/uptime", "write postgresql+asyncpg://db.example/uptime"),
])
def test_a_database_url_without_its_driver_is_one_line(tmp_path, url, message):
    cfg = write(tmp_path / "c.yml", {"database_url": url})
    proc = run("serve", "--config", str(cfg))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr  # a password in the URL is not repeated


def test_a_listen_port_in_use_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write(tmp_path / "c.yml", {"listen": {"port": port},
                                          "database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"})
        proc = run("serve", "--config", str(cfg))
    assert proc.returncode == 2
    assert f"listen: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr and "CancelledError" not in proc.stderr
    assert not (tmp_path / "c.sqlite").exists()  # nothing was started, nothing written


def test_a_relative_sqlite_path_is_the_config_folders_from_any_working_directory(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    cfg = write(folder / "collector.yml", {"database_url": "sqlite+aiosqlite:///state/collector.sqlite",
                                           "checks": [CHECK]})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run("report", "--config", str(cfg), "--policy", "web", "--period", "2026-10", "--format", "json",
               cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "state" / "collector.sqlite").exists()
    assert list(elsewhere.iterdir()) == []  # no empty database in the working directory
    # a database with no evidence yet reports that honestly
    assert '"availability_percent": null' in proc.stdout


def test_an_unreachable_database_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path / "c.yml", {"database_url": f"postgresql+asyncpg://nobody@127.0.0.1:{port}/x",
                                     "checks": [CHECK]})
    proc = run("report", "--config", str(cfg), "--policy", "web", "--period", "2026-10")
    assert proc.returncode == 2
    assert "database_url: cannot connect to the database" in proc.stderr and "Traceback" not in proc.stderr


def test_a_policy_not_in_the_config_is_named(tmp_path):
    cfg = write(tmp_path / "c.yml", {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}",
                                     "checks": [CHECK]})
    proc = run("report", "--config", str(cfg), "--policy", "nexcess", "--period", "2026-10")
    assert proc.returncode == 2
    assert "--policy: 'nexcess' is not a policy of" in proc.stderr and "(policies: web)" in proc.stderr


def test_check_config_validates_without_starting_anything(tmp_path):
    cfg = write(tmp_path / "c.yml", {"database_url": "sqlite+aiosqlite:///c.sqlite", "checks": [CHECK],
                                     "agents": [{"id": "a1"}],
                                     "policies": [{"name": "vision", "preset": "nexon-vision", "components": ["web"]}]})
    proc = run("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert f"{cfg}: valid" in proc.stdout and "policies    1: vision (99.5 %)" in proc.stdout
    assert "a1 without a token" in proc.stdout
    assert not (tmp_path / "c.sqlite").exists()  # nothing started, nothing written
    bad = write(tmp_path / "bad.yml", {"checks": [CHECK], "policies": [{"name": "p", "preset": "nope"}]})
    proc = run("check-config", "--config", str(bad))
    assert proc.returncode == 2 and "preset" in proc.stderr and "Traceback" not in proc.stderr
