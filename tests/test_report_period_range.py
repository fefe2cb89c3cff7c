"""`report --period A..B`: each month, and the NexGen termination right (Service Level Addendum
§4, "three consecutive months") over the range, offline and from the collector's database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner

from collector.cli import main
from collector.reporting import parse_period_range
from rules_support import jsonl, rows_of, series, utc

PRESET = __import__("pathlib").Path(__file__).resolve().parent.parent / "collector" / "presets" / "nexgen-cpu.yml"
AGENTS = ("ams", "fra", "iad")


def hourly_policy(tmp_path) -> str:
    """NexGen CPU as shipped, but a round an hour: three months of results stay small."""
    data = yaml.safe_load(PRESET.read_text())
    data["interval"] = "1h"
    path = tmp_path / "nexgen-hourly.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def month_results(year: int, month: int, *, down_hour: int | None = 5, gap_days: int = 0):
    """Every hour of the month from three agents; all fail at `down_hour` on the 10th; nobody
    reports for the first `gap_days` days (unknown minutes)."""
    start = utc(year, month, 1)
    end = utc(year + (month == 12), month % 12 + 1, 1)
    bad = utc(year, month, 10, down_hour) if down_hour is not None else None
    silent_until = start + timedelta(days=gap_days)
    return series("cpu", start, end, interval=3600, agents=AGENTS,
                  ok=lambda agent, t: None if t < silent_until else t != bad)


def run(*args):
    return CliRunner().invoke(main, ["report", *args])


def write_results(tmp_path, *months) -> str:
    path = tmp_path / "results.jsonl"
    path.write_text(jsonl(rows_of([o for m in months for o in m])))
    return str(path)


def test_three_months_below_target_give_the_termination_right(tmp_path) -> None:
    results = write_results(tmp_path, month_results(2026, 9), month_results(2026, 10), month_results(2026, 11))
    out = run("--policy", hourly_policy(tmp_path), "--period", "2026-09..2026-11", "--results", results,
              "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["periods"] == ["2026-09", "2026-10", "2026-11"]
    assert [m["met"] for m in data["months"]] == [False, False, False]
    assert [m["downtime_minutes"] for m in data["months"]] == [60, 60, 60]
    t = data["termination"]
    assert t["right"] is True
    assert t["note"].startswith("arose with 2026-11: 2026-11 and the 2 months before it were all below 100.0 %")
    # the first months' right depends on July and August, of which the results say nothing
    assert [m["right"] for m in t["months"]] == [None, None, True]
    assert t["months"][0]["note"] == "availability unknown for 2026-08, 2026-07 (no evidence: start the range earlier)"
    # each month is the report `--period YYYY-MM` gives, with its history
    assert [r["period"] for r in data["reports"]] == data["periods"]
    assert data["reports"][2]["termination_right"] is True


def test_a_met_month_in_between_breaks_the_run_and_text_says_so(tmp_path) -> None:
    results = write_results(tmp_path, month_results(2026, 8), month_results(2026, 9),
                            month_results(2026, 10, down_hour=None), month_results(2026, 11))
    out = run("--policy", hourly_policy(tmp_path), "--period", "2026-10..2026-11", "--results", results)
    assert out.exit_code == 0, out.output
    assert "Summary nexgen-cpu 2026-10..2026-11" in out.output
    assert "Termination right (3 consecutive months below target): no" in out.output
    assert "no 3 consecutive months below 100.0 % in 2026-10..2026-11" in out.output
    assert out.output.count("Availability %") == 2  # both months' full reports come first


def test_unknown_minutes_are_never_taken_as_up(tmp_path) -> None:
    # October: no failure seen, but two days without any report: it may or may not have been
    # below 100 %, so November's right cannot be decided either way
    results = write_results(tmp_path, month_results(2026, 9), month_results(2026, 10, down_hour=None, gap_days=2),
                            month_results(2026, 11))
    out = run("--policy", hourly_policy(tmp_path), "--period", "2026-09..2026-11", "--results", results,
              "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    october = data["months"][1]
    assert october["met"] is None and october["unknown_minutes"] == 2 * 1440
    assert data["termination"]["right"] is None
    assert data["termination"]["months"][2]["right"] is None
    assert "2026-10" in data["termination"]["months"][2]["note"]
    assert data["termination"]["note"].startswith("undetermined for 2026-09, 2026-10, 2026-11")


def test_csv_has_one_header_for_all_months(tmp_path) -> None:
    results = write_results(tmp_path, month_results(2026, 9), month_results(2026, 10))
    out = run("--policy", hourly_policy(tmp_path), "--period", "2026-09..2026-10", "--results", results,
              "--format", "csv")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert sum(1 for line in lines if line.startswith("row,")) == 1
    assert [line.split(",")[2] for line in lines if line.startswith("summary,")] == ["2026-09", "2026-10"]


def test_a_range_from_the_collectors_database(tmp_path) -> None:
    results = write_results(tmp_path, month_results(2026, 9), month_results(2026, 10), month_results(2026, 11))
    config = tmp_path / "collector.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}",
        "agents": [{"id": a} for a in AGENTS],
        "checks": [{"name": "cpu", "type": "tcp", "interval": "1h", "host": "127.0.0.1", "port": 1}],
        "policies": [{"name": "nexgen", "preset": hourly_policy(tmp_path), "components": ["cpu"]}],
    }))
    imported = CliRunner().invoke(main, ["import", "--config", str(config), "--results", results])
    assert imported.exit_code == 0, imported.output
    out = run("--policy", "nexgen", "--config", str(config), "--period", "2026-09..2026-11", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [m["met"] for m in data["months"]] == [False, False, False]
    assert data["termination"]["right"] is True


@pytest.mark.parametrize("period, message", [
    ("2026-11..2026-09", "error: --period: '2026-11..2026-09': the range ends (2026-09) before it starts (2026-11)"),
    ("2026-09..", "error: --period: '2026-09..' is not a range YYYY-MM..YYYY-MM"),
    ("2026-9..2026-11", "error: --period: period '2026-9' is not YYYY-MM"),
    ("2026-09..2026-13", "error: --period: period '2026-13' is not YYYY-MM"),
    ("2026-09...2026-11", "error: --period: period '.2026-11' is not YYYY-MM"),
    ("2020-01..2039-01", "error: --period: '2020-01..2039-01' spans 229 months; at most 120"),
])
def test_bad_ranges_name_the_option(tmp_path, period, message) -> None:
    results = write_results(tmp_path, month_results(2026, 9))
    out = run("--policy", hourly_policy(tmp_path), "--period", period, "--results", results)
    assert out.exit_code == 2
    assert out.output.strip() == message
    assert "Traceback" not in out.output


def test_a_single_month_is_still_one_month() -> None:
    assert parse_period_range("2026-09") == ["2026-09"]
    assert parse_period_range("2026-11..2027-02") == ["2026-11", "2026-12", "2027-01", "2027-02"]
