"""Reading recorded results and announcements: clear errors naming file, line and field."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from collector.rules.offline import InputError, check_components, evaluate_offline, read_maintenance, read_results
from collector.rules.policy import load_policy
from rules_support import SIX, jsonl, rows_of, series, utc

GOOD = {"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": True, "latency_ms": 12.5, "error": None}


def write(tmp_path, name, lines):
    f = tmp_path / name
    f.write_text("".join(l + "\n" for l in lines))
    return f


def test_reads_results_in_utc(tmp_path):
    f = write(tmp_path, "results.jsonl", [
        json.dumps(GOOD), "",
        json.dumps({**GOOD, "ts": "2026-10-01T02:00:30+02:00", "ok": False, "error": "timeout"}),
        json.dumps({"agent": "fra", "check": "transit", "slot": "2026-10-01T00:01:00Z", "ok": True}),  # wire name
    ])
    obs = read_results(f)
    assert [(o.agent, o.ts, o.ok) for o in obs] == [
        ("ams", utc(2026, 10, 1), True), ("ams", utc(2026, 10, 1, 0, 0, 30), False), ("fra", utc(2026, 10, 1, 0, 1), True)]
    assert obs[1].ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("bad_line, message", [
    ('{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00", "ok": true}',
     "results.jsonl:17: field 'ts': timestamp '2026-10-01T00:00:00' has no UTC offset"),
    ('{"agent": "ams", "check": "transit", "ts": "yesterday", "ok": true}',
     "results.jsonl:17: field 'ts': timestamp 'yesterday' is not RFC 3339"),
    ('{"agent": "ams", "check": "transit", "ts": 1700000000, "ok": true}',
     "results.jsonl:17: field 'ts': expected an RFC 3339 timestamp, got 1700000000"),
    ('{"agent": "ams", "check": "transit", "ok": true}', "results.jsonl:17: field 'ts': missing"),
    ('{"check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": true}', "results.jsonl:17: field 'agent': missing"),
    ('{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": "yes"}',
     "results.jsonl:17: field 'ok': expected true or false, got \"yes\""),
    ('{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": 1}',
     "results.jsonl:17: field 'ok': expected true or false, got 1"),
    ('{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": true, "latency_ms": "fast"}',
     "results.jsonl:17: field 'latency_ms': expected a number or null"),
    ('{"agent": 7, "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": true}',
     "results.jsonl:17: field 'agent': expected an agent name, got 7"),
    ('{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": tru',
     "results.jsonl:17: not JSON"),
    ('not json at all', "results.jsonl:17: not JSON"),
    ('[1, 2]', "results.jsonl:17: not a JSON object"),
    ('{"agent": "a", "check": "transit", "ts": "2026-10-01T00:00:00Z", "ok": true}{"x": 1}', "results.jsonl:17: not JSON"),
])
def test_bad_result_lines_are_named(tmp_path, bad_line, message):
    lines = [json.dumps(GOOD)] * 16 + [bad_line] + [json.dumps(GOOD)] * 3
    with pytest.raises(InputError) as err:
        read_results(write(tmp_path, "results.jsonl", lines))
    assert str(err.value).startswith(message)
    assert err.value.line == 17


def test_bad_line_deep_in_a_large_file_is_found(tmp_path):
    lines = [json.dumps(GOOD)] * 12_000
    lines[11_000] = '{"agent": "ams", "check": "transit", "ts": "2026-10-01T00:00:00", "ok": true}'
    with pytest.raises(InputError, match=r"^results.jsonl:11001: field 'ts'"):
        read_results(write(tmp_path, "results.jsonl", lines))


def test_unknown_check(tmp_path):
    p = load_policy("nexcess")
    f = write(tmp_path, "results.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, "check": "web"})])
    with pytest.raises(InputError, match=r"^results.jsonl:2: field 'check': unknown check 'web'; "
                                         r"the policy's components are transit"):
        read_results(f, components=p.components)
    obs = read_results(f)
    with pytest.raises(InputError, match=r"unknown check 'web'; policy 'nexcess' accepts transit"):
        check_components(p, obs)


def test_reads_lines_from_memory():
    obs = read_results([json.dumps(GOOD), json.dumps({**GOOD, "agent": "fra"})])
    assert [o.agent for o in obs] == ["ams", "fra"]


def test_maintenance_file(tmp_path):
    good = {"kind": "normal", "announced": "2026-10-01T00:00:00Z", "start": "2026-10-04T03:00:00Z",
            "end": "2026-10-04T05:00:00Z", "note": "db"}
    f = write(tmp_path, "maint.jsonl", [json.dumps(good)])
    [a] = read_maintenance(f)
    assert (a.kind, a.start, a.end, a.note) == ("normal", utc(2026, 10, 4, 3), utc(2026, 10, 4, 5), "db")
    backwards = write(tmp_path, "maint.jsonl", [json.dumps(good), json.dumps({**good, "end": "2026-10-04T02:00:00Z"})])
    with pytest.raises(InputError, match=r"^maint.jsonl:2: field 'end': end 2026-10-04T02:00:00Z is before start"):
        read_maintenance(backwards)
    missing = write(tmp_path, "maint.jsonl", [json.dumps({k: v for k, v in good.items() if k != "announced"})])
    with pytest.raises(InputError, match=r"^maint.jsonl:1: field 'announced': missing"):
        read_maintenance(missing)
    naive = write(tmp_path, "maint.jsonl", [json.dumps({**good, "start": "2026-10-04T03:00:00"})])
    with pytest.raises(InputError, match=r"^maint.jsonl:1: field 'start': timestamp .* has no UTC offset"):
        read_maintenance(naive)
    with pytest.raises(InputError, match=r"^maint.jsonl:1: field 'kind': maintenance kind 'normal' is not accepted "
                                         r"\(accepted kinds: scheduled, emergency\)"):
        read_maintenance(f, kinds=list(load_policy("nexcess").maintenance))


def test_offline_report_from_a_file_equals_from_memory(tmp_path):
    p = load_policy("nexcess")
    obs = series("transit", utc(2026, 11, 1), utc(2026, 11, 2), ok=lambda a, t: not (10 <= t.hour < 11))
    f = tmp_path / "results.jsonl"
    f.write_text(jsonl(rows_of(obs)))
    assert evaluate_offline(p, read_results(f), "2026-11") == evaluate_offline(p, obs, "2026-11")
    assert evaluate_offline(p, obs, "2026-11")["downtime_minutes"] == 60


def test_performance_smoke_one_month_six_agents(tmp_path):
    """About 270,000 lines (one month, 60 s, six agents): prints the time, asserts only the figures."""
    p = load_policy("nexcess")
    start, end = utc(2026, 10, 1), utc(2026, 11, 1, 6)
    down = (utc(2026, 10, 12, 3), utc(2026, 10, 12, 3, 47))
    f = tmp_path / "month.jsonl"
    with f.open("w") as out:
        t = start
        while t < end:
            ts = t.strftime("%Y-%m-%dT%H:%M:%SZ")
            ok = "false" if down[0] <= t < down[1] else "true"
            for agent in SIX:
                out.write(f'{{"agent": "{agent}", "check": "transit", "ts": "{ts}", "ok": {ok}, "latency_ms": 12.5}}\n')
            t += timedelta(minutes=1)
    began = time.perf_counter()
    obs = read_results(f)
    read_at = time.perf_counter()
    report = evaluate_offline(p, obs, "2026-10")
    done = time.perf_counter()
    print(f"\n{len(obs)} results: read {read_at - began:.2f} s, evaluate_offline {done - read_at:.2f} s")
    assert len(obs) == 270_000          # 31 days + 6 hours = 45,000 slots, six agents each
    assert report["downtime_minutes"] == 47 and report["data_coverage_percent"] == 100.0
