"""Policies and presets: loading, validation messages that name the key, overrides, hashing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.rules.durations import format_duration, parse_duration
from collector.rules.policy import PolicyError, check_intervals, list_presets, load_policy

REPO = Path(__file__).resolve().parents[1]

ALL_PRESETS = [
    "haivision-streaming", "haivision-vcms-read", "haivision-vcms-write", "nexcess", "nexgen-cpu",
    "nexgen-gpu", "nexgen-storage", "nexon-vision", "numezis-business", "numezis-enterprise",
    "numezis-growth", "numezis-starter",
]


def test_every_preset_the_issue_names_is_shipped():
    assert list_presets() == ALL_PRESETS


# name, components, interval s, quorum mode, min_reporting, expected agents, compose, min_duration s,
# timezone, target, guaranteed, credit type, claim type, claim days, maintenance kinds
PRESET_TABLE = [
    ("nexon-vision", ["cms", "api"], 60, "majority", 2, None, "any", 300, "UTC", 99.5, None, "none", "none", None,
     ["scheduled", "emergency"]),
    ("nexgen-gpu", ["gpu"], 60, "majority", 2, None, "any", 0, "UTC", 100.0, None, "pro_rata",
     "after_period_calendar_days", 5, ["scheduled"]),
    ("nexgen-cpu", ["cpu"], 60, "majority", 2, None, "any", 0, "UTC", 100.0, None, "pro_rata",
     "after_period_calendar_days", 5, ["scheduled"]),
    ("nexgen-storage", ["storage"], 60, "majority", 2, None, "any", 0, "UTC", 100.0, None, "pro_rata",
     "after_period_calendar_days", 5, ["scheduled"]),
    ("haivision-vcms-write", ["write"], 60, "majority", 2, None, "any", 0, "America/Chicago", None, None,
     "half_day_per_started_hour", "after_period_business_days", 10, ["normal", "urgent", "upgrade"]),
    ("haivision-vcms-read", ["read"], 60, "majority", 2, None, "any", 0, "America/Chicago", None, None,
     "half_day_per_started_hour", "after_period_business_days", 10, ["normal", "urgent", "upgrade"]),
    ("haivision-streaming", ["streaming"], 360, "all", 1, 6, "any", 720, "America/Chicago", 99.9, None,
     "day_per_outage_day", "none", None, ["normal", "urgent", "upgrade"]),
    ("numezis-starter", ["app"], 60, "majority", 2, None, "any", 0, "Europe/Zurich", 99.0, 98.5, "none", "none",
     None, ["planned", "emergency"]),
    ("numezis-growth", ["app"], 60, "majority", 2, None, "any", 0, "Europe/Zurich", 99.5, 99.0, "none", "none",
     None, ["planned", "emergency"]),
    ("numezis-business", ["app"], 60, "majority", 2, None, "any", 0, "Europe/Zurich", 99.9, 99.5,
     "tiered_percent", "after_period_calendar_days", 30, ["planned", "emergency"]),
    ("numezis-enterprise", ["app"], 60, "majority", 2, None, "any", 0, "Europe/Zurich", 99.95, 99.9,
     "tiered_percent", "after_period_calendar_days", 30, ["planned", "emergency"]),
    ("nexcess", ["transit"], 60, "majority", 2, None, "any", 0, "UTC", 100.0, None, "per_outage_increment",
     "after_outage_end", 7, ["scheduled", "emergency"]),
]


@pytest.mark.parametrize("row", PRESET_TABLE, ids=[r[0] for r in PRESET_TABLE])
def test_preset_matches_the_issue_and_contract(row):
    (name, components, interval, mode, min_reporting, expected, compose, min_duration, tz, target, guaranteed,
     credit, claim, claim_days, kinds) = row
    p = load_policy(name)
    assert p.name == name
    assert p.components == components
    assert p.interval == interval
    assert p.quorum.mode == mode
    assert p.quorum.min_reporting == min_reporting
    assert p.quorum.expected_agents == expected
    assert p.compose == compose
    assert p.min_duration == min_duration
    assert p.timezone == tz
    assert p.target_percent == target
    assert p.guaranteed_percent == guaranteed
    assert p.credit.type == credit
    assert p.claim.type == claim
    assert p.claim.days == claim_days
    assert list(p.maintenance) == kinds


def test_maintenance_tables_hold_the_contract_numbers():
    nexon = load_policy("nexon-vision").maintenance
    assert nexon["scheduled"].min_notice == 24 * 3600 and nexon["emergency"].min_notice == 0
    vcms = load_policy("haivision-vcms-write").maintenance
    normal, urgent, upgrade = vcms["normal"], vcms["urgent"], vcms["upgrade"]
    assert (normal.monthly_budget, normal.max_continuous, normal.min_notice) == (10 * 3600, 6 * 3600, 48 * 3600)
    assert (normal.window.start, normal.window.end) == ("22:00", "05:00")
    assert (urgent.monthly_budget, urgent.max_continuous, urgent.min_notice, urgent.window) == (1800, 900, 3 * 3600, None)
    assert (upgrade.monthly_budget, upgrade.max_continuous, upgrade.min_notice) == (3600, 3600, 5 * 86400)
    assert (upgrade.window.start, upgrade.window.end) == ("00:00", "04:00")
    planned = load_policy("numezis-business").maintenance["planned"]
    assert (planned.min_notice, planned.notice_required_over) == (72 * 3600, 15 * 60)
    assert load_policy("nexgen-gpu").maintenance["scheduled"].min_notice == 24 * 3600
    assert all(k.min_notice == 0 for k in load_policy("nexcess").maintenance.values())


def test_vcms_presets_require_a_target_and_say_why():
    p = load_policy("haivision-vcms-write")
    assert p.requires_target and p.target_percent is None
    with pytest.raises(PolicyError, match="lost the availability number.*target_percent"):
        p.require_target()
    assert load_policy("haivision-vcms-write", target_percent=99.9).require_target() == 99.9


def test_policy_file_may_start_from_a_preset(tmp_path):
    f = tmp_path / "mine.yml"
    f.write_text("preset: nexgen-gpu\ncommenced: 2026-11-16T00:00:00Z\n"
                 "maintenance:\n  scheduled:\n    min_notice: 72h\n")
    p = load_policy(str(f))
    assert p.name == "nexgen-gpu" and p.commenced.isoformat() == "2026-11-16T00:00:00+00:00"
    assert p.maintenance["scheduled"].min_notice == 72 * 3600
    assert p.credit.type == "pro_rata"


def test_a_null_key_in_an_override_removes_it(tmp_path):
    f = tmp_path / "strict.yml"
    f.write_text("preset: haivision-streaming\nmaintenance: {normal: null, urgent: null, upgrade: null}\n")
    assert load_policy(f).maintenance == {}


def test_keyword_overrides_and_hash():
    base = load_policy("nexon-vision")
    assert base.content_hash() == load_policy("nexon-vision").content_hash()
    assert len(base.content_hash()) == 16
    other = base.with_overrides(target_percent=99.9)
    assert other.target_percent == 99.9 and base.target_percent == 99.5
    assert other.content_hash() != base.content_hash()
    assert load_policy("nexon-vision", target_percent=99.9).content_hash() == other.content_hash()


@pytest.mark.parametrize("text, message", [
    ("preset: nexon-vision\ncolour: red\n", "colour: unknown key"),
    ("preset: nexon-vision\nquorum: {mode: majority, min_reporting: 2, extra: 1}\n", "quorum.extra: unknown key"),
    ("preset: nexon-vision\ninterval: 5 parsecs\n", "interval: invalid duration '5 parsecs'"),
    ("preset: nexon-vision\ntimezone: Mars/Olympus\n", "timezone: unknown time zone 'Mars/Olympus'"),
    ("preset: nexon-vision\nquorum: {mode: k_of_n}\n", "quorum: mode k_of_n needs `k`"),
    ("preset: nexon-vision\nquorum: {mode: unanimous}\n", "quorum.mode: Input should be 'all', 'majority' or 'k_of_n'"),
    ("preset: nexon-vision\nmaintenance: {scheduled: {min_notice: soon}}\n",
     "maintenance.scheduled.min_notice: invalid duration 'soon'"),
    ("preset: haivision-vcms-read\nmaintenance: {normal: {window: {start: '25:00', end: '05:00'}}}\n",
     "maintenance.normal.window.start: '25:00' is not a local time HH:MM"),
    ("preset: nexon-vision\ncredit: {type: bonus}\n", "credit: Input tag 'bonus' found using 'type' does not match"),
    ("preset: nexgen-gpu\ncredit: {type: pro_rata, max_percent: -1}\n", "credit.max_percent: Input should be greater"),
    ("preset: nexon-vision\ncommenced: 2026-11-16T00:00:00\n", "commenced: commenced needs a UTC offset"),
    ("preset: nexon-vision\ntarget_percent: 101\n", "target_percent: Input should be less than or equal to 100"),
    ("preset: numezis-starter\ncredit: {type: tiered_percent}\nguaranteed_percent: null\n",
     "tiered_percent needs `guaranteed_percent`"),
    ("preset: no-such-contract\n", "preset: unknown preset 'no-such-contract'"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_policy_files_name_the_key(tmp_path, text, message):
    f = tmp_path / "bad.yml"
    f.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(str(f))
    assert message in str(err.value)
    assert str(f) in str(err.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(PolicyError, match="unknown preset 'nexon'; presets: haivision-streaming"):
        load_policy("nexon")


def test_mixed_intervals_are_refused_naming_components():
    p = load_policy("nexon-vision")
    check_intervals(p, {"cms": 60, "api": 60, "unrelated": 10})
    with pytest.raises(PolicyError, match=r"mixes intervals.*every 1m.*cms every 1m, api every 30s"):
        check_intervals(p, {"cms": 60, "api": 30})
    with pytest.raises(PolicyError, match=r"cms every 2m, api every 2m"):
        check_intervals(p, {"cms": 120, "api": 120})


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), ("1d", 86400), (90, 90), ("0", 0), (0.5, 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 parsecs", "-1s", True, None, "1h30m"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (0, 0.25, 900, 7200, 172800, 90)] == ["0s", "250ms", "15m", "2h", "2d", "90s"]


def test_presets_load_by_name_from_any_directory(tmp_path):
    code = "from collector.rules import load_policy; print(load_policy('nexcess').name)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "nexcess"
