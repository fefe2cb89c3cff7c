"""The collector's CLI as a user runs it: real processes, exit codes, messages naming what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

AGENTS = ("a1", "a2", "a3")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def write_results(path: Path, failed_minutes: range, check: str = "transit") -> None:
    """October 2026, 60 s slots from 10:00Z for 60 minutes; all agents fail in failed_minutes."""
    lines = []
    for minute in range(60):
        ts = f"2026-10-03T10:{minute:02d}:00Z"
        for agent in AGENTS:
            ok = minute not in failed_minutes
            lines.append(json.dumps({"agent": agent, "check": check, "ts": ts, "ok": ok,
                                     "error": None if ok else "timeout"}))
    path.write_text("\n".join(lines) + "\n")


def test_offline_report_json_has_the_contract_figures(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    write_results(results, range(10, 42))  # one 32-minute outage
    proc = run("report", "--policy", "nexcess", "--period", "2026-10", "--results", str(results), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["total_minutes"] == 44640
    assert report["downtime_minutes"] == 32
    assert [(o["start"], o["end"]) for o in report["outages"]] == [("2026-10-03T10:10:00Z", "2026-10-03T10:42:00Z")]
    assert report["credit"]["percent"] == 10  # two complete 15-minute increments at 5 % each
    assert report["met"] is False


def test_offline_report_text_and_csv(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    write_results(results, range(10, 16))
    text = run("report", "--policy", "nexon-vision", "--period", "2026-10", "--results", str(results),
               "--format", "text")
    assert text.returncode != 0  # nexon-vision's components are cms and api, not transit
    assert "transit" in text.stderr and "cms" in text.stderr
    write_results(results, range(10, 16), check="api")
    text = run("report", "--policy", "nexon-vision", "--period", "2026-10", "--results", str(results))
    assert text.returncode == 0, text.stderr
    assert "2026-10-03T10:10:00Z" in text.stdout
    csv = run("report", "--policy", "nexon-vision", "--period", "2026-10", "--results", str(results), "--format", "csv")
    assert csv.returncode == 0
    assert csv.stdout.count("\n") >= 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "r.jsonl:2"),
        ('{"agent": "a1", "check": "transit", "ts": "2026-10-03T10:00:00", "ok": true}', "r.jsonl:2: field 'ts'"),
        ('{"agent": "a1", "check": "transit", "ts": "2026-10-03T10:00:00Z", "ok": "yes"}', "r.jsonl:2: field 'ok'"),
        ('{"agent": "a1", "ts": "2026-10-03T10:00:00Z", "ok": true}', "r.jsonl:2: field 'check'"),
    ],
)
def test_bad_result_lines_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text('{"agent": "a1", "check": "transit", "ts": "2026-10-03T10:00:00Z", "ok": true}\n' + line + "\n")
    proc = run("report", "--policy", "nexcess", "--period", "2026-10", "--results", str(results))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "nexcess", "--period", "2026-13"], "--period"),
        (["--policy", "no-such-contract", "--period", "2026-10"], "no-such-contract"),
        (["--policy", "haivision-vcms-read", "--period", "2026-10"], "target"),
    ],
)
def test_bad_report_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    results = tmp_path / "r.jsonl"
    write_results(results, range(0), check="read")
    proc = run("report", *args, "--results", str(results))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_claim_against_evidence(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    write_results(results, range(10, 42))
    proc = run("verify-claim", "--policy", "nexcess", "--start", "2026-10-03T10:00:00Z",
               "--end", "2026-10-03T10:30:00Z", "--results", str(results), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    claim = json.loads(proc.stdout)
    assert claim["claimed_minutes"] == 30
    assert claim["verified_minutes"] == 20
    bad = run("verify-claim", "--policy", "nexcess", "--start", "2026-10-03T10:00:00", "--end",
              "2026-10-03T10:30:00Z", "--results", str(results))
    assert bad.returncode == 2
    assert "--start" in bad.stderr and "offset" in bad.stderr


def test_agents_add_prints_a_token_once_and_revoke_takes_effect(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}",
                                   "agents": [{"id": "eu-west"}]}))
    add = run("agents", "add", "eu-west", "--config", str(cfg))
    assert add.returncode == 0, add.stderr
    token = add.stdout.strip()
    assert len(token) >= 32
    listed = json.loads(run("agents", "list", "--config", str(cfg), "--format", "json").stdout)
    assert [(a["id"], a["active"]) for a in listed] == [("eu-west", True)]
    assert token not in (tmp_path / "c.sqlite").read_bytes().decode("latin-1")  # only the hash is stored
    assert run("agents", "revoke", "eu-west", "--config", str(cfg)).returncode == 0
    listed = json.loads(run("agents", "list", "--config", str(cfg), "--format", "json").stdout)
    assert [(a["id"], a["active"]) for a in listed] == [("eu-west", False)]
    missing = run("agents", "revoke", "nobody", "--config", str(cfg))
    assert missing.returncode == 2
    assert "no agent 'nobody'" in missing.stderr


def test_import_then_report_from_the_database_equals_the_offline_report(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    write_results(results, range(10, 42))
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}",
        "checks": [{"name": "transit", "type": "icmp", "host": "127.0.0.1", "interval": 60}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["transit"]}]}))
    first = run("import", "--config", str(cfg), "--results", str(results))
    assert first.returncode == 0, first.stderr
    assert "imported 180 results (0 already stored) from 3 agents" in first.stdout
    again = run("import", "--config", str(cfg), "--results", str(results))
    assert "imported 0 results (180 already stored)" in again.stdout
    from_db = json.loads(run("report", "--config", str(cfg), "--policy", "sla", "--period", "2026-10",
                             "--format", "json").stdout)
    offline = json.loads(run("report", "--policy", "nexcess", "--period", "2026-10", "--results", str(results),
                             "--format", "json").stdout)
    for key in ("total_minutes", "downtime_minutes", "availability_percent", "outages", "credit", "data_coverage_percent"):
        assert from_db[key] == offline[key], key
