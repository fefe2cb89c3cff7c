"""Maintenance records are evidence: notice judged from when the collector recorded an
announcement, a stated earlier time counted only where the policy trusts it, cancellation that
keeps the record, the same validation in the API and the CLI, the migration of existing rows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from collector import migrate
from collector.app import create_app
from collector.config import parse_config
from collector.db import make_engine
from collector.rules.model import Announcement, Round, Verdict
from collector.rules.offline import InputError, evaluate_offline, read_maintenance
from collector.rules.periods import month_bounds
from collector.rules.policy import load_policy
from collector.rules.report import build_report, render_text
from collector.rules.windows import find_windows
from collector.service import CollectorState
from rules_support import SIX, series, utc

UTC = timezone.utc
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789", "a3": "token-a3-0123456789"}


# -- the month's verdict -------------------------------------------------------------------------

def month_report(policy, period, failed_from, failed_minutes, maintenance):
    """A round for every slot of the month, FAILED for `failed_minutes` from `failed_from`, else UP."""
    start, end = month_bounds(period, policy.tz)
    step = timedelta(seconds=policy.interval)
    down_until = failed_from + failed_minutes * M
    rounds, t = [], start
    while t < end:
        rounds.append(Round(t, Verdict.FAILED if failed_from <= t < down_until else Verdict.UP, ()))
        t += step
    return build_report(policy, period, rounds, find_windows(policy, rounds), maintenance)


def test_back_dated_announcement_recorded_after_the_fact_leaves_the_month_missed():
    # NEXON Vision SLA §3.3: at most 216 minutes a month; §4.1: scheduled maintenance notified at
    # least 24 hours in advance. A 300-minute outage on 10 November, then, on 12 November, an
    # announcement of "scheduled maintenance" over it, stated as announced on 1 November.
    nexon = load_policy("nexon-vision")
    down = utc(2026, 11, 10, 10)
    back_dated = Announcement("scheduled", utc(2026, 11, 1), down, down + 300 * M, "stated after the fact",
                              recorded_at=utc(2026, 11, 12, 9), recorded_by="api")
    r = month_report(nexon, "2026-11", down, 300, [back_dated])
    assert (r["outage_minutes"], r["excluded_minutes"], r["downtime_minutes"]) == (300, 0, 300)
    assert r["met"] is False
    [m] = r["maintenance"]
    assert (m["recorded_at"], m["stated_announced"]) == ("2026-11-12T09:00:00Z", "2026-11-01T00:00:00Z")
    assert m["notice"]["judged_from"] == "recorded_at" and m["notice"]["met"] is False
    assert "trust_stated_notice: false" in m["broken_rules"][0]["detail"]
    # the same with a policy that trusts stated notice: the operator's email counts
    trusting = nexon.with_overrides(trust_stated_notice=True)
    r = month_report(trusting, "2026-11", down, 300, [back_dated])
    assert (r["excluded_minutes"], r["downtime_minutes"], r["met"]) == (300, 0, True)
    assert r["maintenance"][0]["notice"]["judged_from"] == "stated_announced"


@pytest.mark.parametrize("recorded_after, excluded", [(24 * H, 120), (25 * H, 0)])
def test_numezis_emergency_notified_ex_post_excludes_only_within_24_hours(recorded_after, excluded):
    # Numezis SaaS SLA §4.2: "without prior notice. An ex post notification will be sent within 24 hours."
    p = load_policy("numezis-business")
    down = utc(2026, 10, 10, 21)
    emergency = Announcement("emergency", None, down, down + 2 * H, recorded_at=down + recorded_after,
                             recorded_by="cli")
    r = month_report(p, "2026-10", down, 120, [emergency])
    assert r["excluded_minutes"] == excluded and r["downtime_minutes"] == 120 - excluded
    notice = r["maintenance"][0]["notice"]
    assert notice["rule"] == "after_start_within" and notice["start"] == "2026-10-10T21:00:00Z"
    assert notice["at"] == (down + recorded_after).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = render_text(r)
    if excluded:
        assert "emergency 2026-10-10T21:00:00Z: notice met (after_start_within): recorded 1d after its start" in text
    else:
        assert "emergency 2026-10-10T21:00:00Z: notice: recorded 25h after its start" in text


# -- offline records -----------------------------------------------------------------------------

def test_offline_records_take_announced_as_recorded_unless_recorded_at_is_given(tmp_path: Path):
    nexon = load_policy("nexon-vision")
    down = utc(2026, 11, 10, 10)
    rows = [
        # the operator's own record: its announced time is when it was recorded
        {"kind": "scheduled", "announced": "2026-11-08T10:00:00Z", "start": "2026-11-10T10:00:00Z",
         "end": "2026-11-10T10:20:00Z", "note": "own record"},
        # exported from the collector: recorded after the fact, stated earlier
        {"kind": "scheduled", "stated_announced": "2026-11-01T00:00:00Z", "recorded_at": "2026-11-12T00:00:00Z",
         "start": "2026-11-10T10:20:00Z", "end": "2026-11-10T10:30:00Z"},
        # cancelled: excludes nothing
        {"kind": "emergency", "recorded_at": "2026-11-10T10:31:00Z", "cancelled_at": "2026-11-10T11:00:00Z",
         "cancel_reason": "not needed", "start": "2026-11-10T10:30:00Z", "end": "2026-11-10T10:40:00Z"},
    ]
    path = tmp_path / "maintenance.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    own, exported, cancelled = read_maintenance(path, kinds=list(nexon.maintenance))
    assert (own.recorded, own.recorded_at, own.announced) == (utc(2026, 11, 8, 10), None, utc(2026, 11, 8, 10))
    assert (exported.recorded, exported.announced) == (utc(2026, 11, 12), utc(2026, 11, 1))
    assert cancelled.cancelled_at == utc(2026, 11, 10, 11) and cancelled.cancel_reason == "not needed"
    obs = series("cms", down - 10 * M, down + 60 * M, agents=SIX[:2]) + series(
        "api", down - 10 * M, down + 60 * M, agents=SIX[:2], ok=lambda a, t: not (down <= t < down + 40 * M))
    r = evaluate_offline(nexon, obs, "2026-11", [own, exported, cancelled])
    assert (r["outage_minutes"], r["excluded_minutes"]) == (40, 20)
    by_note = {m["start"]: m for m in r["maintenance"]}
    assert by_note["2026-11-10T10:00:00Z"]["recorded_at_from"] == "announced"
    assert [b["rule"] for b in by_note["2026-11-10T10:30:00Z"]["broken_rules"]] == ["cancelled"]
    text = render_text(r)
    assert "the file's own `announced` is taken as when each was recorded" in text


@pytest.mark.parametrize("row, message", [
    ({"start": "2026-11-10T10:00:00Z", "end": "2026-11-10T11:00:00Z"},
     "m.jsonl:1: field 'announced': missing (give when it was announced, or recorded_at)"),
    ({"announced": "2026-11-10T12:00:00Z", "recorded_at": "2026-11-10T09:00:00Z",
      "start": "2026-11-10T10:00:00Z", "end": "2026-11-10T11:00:00Z"},
     "m.jsonl:1: field 'announced': 2026-11-10T12:00:00Z is later than recorded_at 2026-11-10T09:00:00Z"),
    ({"recorded_at": "2026-11-10T09:00:00Z", "cancelled_at": "2026-11-10T08:00:00Z",
      "start": "2026-11-10T10:00:00Z", "end": "2026-11-10T11:00:00Z"},
     "m.jsonl:1: field 'cancelled_at': 2026-11-10T08:00:00Z is before it was recorded (2026-11-10T09:00:00Z)"),
    ({"recorded_at": "yesterday", "start": "2026-11-10T10:00:00Z", "end": "2026-11-10T11:00:00Z"},
     "m.jsonl:1: field 'recorded_at': timestamp 'yesterday' is not RFC 3339"),
])
def test_offline_record_errors_name_the_field(tmp_path: Path, row, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"kind": "scheduled", **row}) + "\n")
    with pytest.raises(InputError) as err:
        read_maintenance(path)
    assert str(err.value).startswith(message)


# -- the API -------------------------------------------------------------------------------------

def config_data(database_url: str) -> dict:
    return {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/",
                    "outage": {"quorum": "all", "min_duration": "2m"}}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
    }


@pytest.fixture
async def api(database_url, aiohttp_client):
    state = CollectorState.create(parse_config(config_data(database_url), "test"))
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def outage_two_hours_ago(api) -> datetime:
    """Every agent fails minutes 2-6 (a 5-minute verified outage) of the hour two hours ago."""
    base = (datetime.now(UTC) - 2 * H).replace(minute=0, second=0, microsecond=0)
    for agent, token in TOKENS.items():
        results = [{"id": uuid.uuid4().hex, "check": "web", "slot": (base + i * M).isoformat(),
                    "started": (base + i * M).isoformat(), "ok": not 2 <= i < 7, "latency_ms": None,
                    "status_code": None, "error": None if not 2 <= i < 7 else "connect"} for i in range(12)]
        resp = await api.post("/api/v1/results", json={"agent": agent, "results": results},
                              headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, await resp.text()
    await api.state.evaluator.tick()
    return base


async def report(api, moment: datetime) -> dict:
    resp = await api.get("/api/v1/reports/sla", params={"period": f"{moment:%Y-%m}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_api_records_its_own_time_and_cancelling_keeps_the_record_but_stops_the_exclusion(api) -> None:
    base = await outage_two_hours_ago(api)
    window = {"start": z(base), "end": z(base + 10 * M)}
    # scheduled, stated as announced two days before, recorded now: after the fact, so nothing is excluded
    before = datetime.now(UTC).replace(microsecond=0)
    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={
        "policy": "sla", "kind": "scheduled", "announced": z(base - 2 * D), **window, "author": "ops on call"})
    assert resp.status == 201, await resp.text()
    scheduled = await resp.json()
    assert scheduled["recorded_by"] == "api" and scheduled["author"] == "ops on call"
    assert scheduled["stated_announced"] == z(base - 2 * D)
    assert before <= datetime.fromisoformat(scheduled["recorded_at"].replace("Z", "+00:00")) <= datetime.now(UTC)
    assert scheduled["judgement"]["compliant"] is False
    assert scheduled["judgement"]["notice"]["rule"] == "by_start"
    # emergency, recorded now: Nexcess "when possible in advance" allows notice after the fact
    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={"policy": "sla", "kind": "emergency", **window})
    emergency = await resp.json()
    assert resp.status == 201 and emergency["stated_announced"] is None
    assert emergency["judgement"]["notice"]["rule"] == "after_start_any"
    r = await report(api, base)
    assert (r["outage_minutes"], r["excluded_minutes"], r["downtime_minutes"]) == (5, 5, 0)

    resp = await api.delete(f"/api/v1/maintenance/{emergency['id']}", headers=ADMIN, json={"reason": "wrong kind"})
    assert resp.status == 200, await resp.text()
    cancelled = await resp.json()
    assert cancelled["cancelled"] is True and cancelled["cancel_reason"] == "wrong kind"
    assert cancelled["cancelled_by"] == "api" and cancelled["cancelled_at"] >= emergency["recorded_at"]
    listed = (await (await api.get("/api/v1/maintenance", params={"policy": "sla"})).json())["maintenance"]
    assert [(m["id"], m["cancelled"]) for m in listed] == [(scheduled["id"], False), (emergency["id"], True)]
    assert listed[1]["cancelled_at"] == cancelled["cancelled_at"]
    r = await report(api, base)
    assert (r["excluded_minutes"], r["downtime_minutes"]) == (0, 5)
    assert [b["rule"] for b in r["maintenance"][1]["broken_rules"]] == ["cancelled"]

    again = await api.delete(f"/api/v1/maintenance/{emergency['id']}", headers=ADMIN, params={"reason": "twice"})
    assert again.status == 409
    assert "already cancelled at" in (await again.json())["error"]
    # the first cancellation stands
    listed = (await (await api.get("/api/v1/maintenance")).json())["maintenance"]
    assert listed[1]["cancel_reason"] == "wrong kind"


@pytest.mark.parametrize("method, path, body, status, message", [
    ("post", "/api/v1/maintenance", {"kind": "scheduled", "start": "2026-10-03T10:00:00Z", "end": "2026-10-03T11:00:00Z"},
     422, "policy: Field required"),
    ("post", "/api/v1/maintenance", {"policy": "nope", "kind": "scheduled", "start": "2026-10-03T10:00:00Z",
                                     "end": "2026-10-03T11:00:00Z"}, 404, "policy: unknown policy 'nope'"),
    ("post", "/api/v1/maintenance", {"policy": "sla", "kind": "normal", "start": "2026-10-03T10:00:00Z",
                                     "end": "2026-10-03T11:00:00Z"}, 422, "kind: policy 'sla' accepts no maintenance of kind 'normal'"),
    ("post", "/api/v1/maintenance", {"policy": "sla", "kind": "scheduled", "start": "2026-10-03T10:00:00Z",
                                     "end": "2026-10-03T10:00:00Z"}, 422, "end: must be after start"),
    ("post", "/api/v1/maintenance", {"policy": "sla", "kind": "scheduled", "start": "2026-10-03T10:00:00Z",
                                     "end": "2026-10-03T11:00:00Z", "announced": "2999-01-01T00:00:00Z"},
     422, "announced: 2999-01-01T00:00:00Z is later than now"),
    ("post", "/api/v1/maintenance", {"policy": "sla", "kind": "scheduled", "start": "2026-10-03T10:00:00Z",
                                     "end": "2026-10-03T11:00:00Z", "recorded_at": "2026-10-01T00:00:00Z"},
     422, "recorded_at: unknown field"),
    ("delete", "/api/v1/maintenance/999", None, 404, "id: no maintenance announcement with id 999"),
    ("delete", "/api/v1/maintenance/abc", None, 404, "id: no maintenance announcement with id 'abc'"),
    ("delete", "/api/v1/maintenance/99999999999999999999", None, 404, "id: no maintenance announcement"),
    ("delete", "/api/v1/maintenance/1", {"why": "x"}, 422, "why: unknown field"),
    ("delete", "/api/v1/maintenance/1?reason=a", {"reason": "b"}, 422, "reason: give it in the JSON body or in the query"),
])
async def test_bad_maintenance_requests_are_named(api, method, path, body, status, message) -> None:
    resp = await getattr(api, method)(path, headers=ADMIN, **({"json": body} if body is not None else {}))
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]
    assert (await getattr(api, method)(path)).status == 401


async def test_status_and_report_pages_show_recorded_stated_and_cancelled(database_url, aiohttp_client) -> None:
    data = config_data(database_url)
    state = CollectorState.create(parse_config(data, "test"))
    http = await aiohttp_client(create_app(state))
    start = (datetime.now(UTC) - H).replace(second=0, microsecond=0)
    body = {"policy": "sla", "kind": "scheduled", "start": z(start), "end": z(start + 30 * M),
            "announced": z(start - D), "author": "alice"}
    first = await (await http.post("/api/v1/maintenance", headers=ADMIN, json=body)).json()
    resp = await http.delete(f"/api/v1/maintenance/{first['id']}", headers=ADMIN, params={"reason": "postponed"})
    assert resp.status == 200
    page = await (await http.get("/")).text()
    assert "Scheduled maintenance: sla (cancelled)" in page
    assert "(api, alice)" in page and "Stated as announced" in page and "postponed" in page
    report_page = await (await http.get(f"/policies/sla/{start:%Y-%m}")).text()
    assert "Recorded (stated)" in report_page and "stated:" in report_page
    assert "cancelled" in report_page and "postponed" in report_page


# -- the CLI, against the database ---------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, timeout=120)


def write_config(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "collector.yml"
    path.write_text(yaml.safe_dump(config_data(database_url)))
    return str(path)


def test_cli_announces_lists_and_cancels_in_the_database(tmp_path: Path, database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    before = datetime.now(UTC).replace(microsecond=0)
    done = cli("maintenance", "announce", "--config", config, "--policy", "sla", "--kind", "scheduled",
               "--start", "2026-10-03T10:00:00Z", "--end", "2026-10-03T11:00:00Z",
               "--announced", "2026-10-01T00:00:00Z", "--author", "bob", "--note", "switch", "--format", "json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["recorded_by"], record["author"], record["stated_announced"]) == ("cli", "bob", "2026-10-01T00:00:00Z")
    assert datetime.fromisoformat(record["recorded_at"].replace("Z", "+00:00")) >= before
    # recorded now, two months after it started: Nexcess scheduled work is recorded by its start
    assert record["judgement"]["compliant"] is False and record["judgement"]["notice"]["judged_from"] == "recorded_at"
    text = cli("maintenance", "announce", "--config", config, "--policy", "sla", "--kind", "emergency",
               "--start", "2026-10-04T10:00:00Z", "--end", "2026-10-04T10:30:00Z")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"recorded maintenance {record['id'] + 1}: sla emergency")
    assert "compliant; notice: recorded" in text.stdout

    cancelled = cli("maintenance", "cancel", str(record["id"]), "--config", config, "--reason", "typo")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled maintenance {record['id']}" in cancelled.stdout
    twice = cli("maintenance", "cancel", str(record["id"]), "--config", config)
    assert twice.returncode == 2 and "already cancelled" in twice.stderr
    unknown = cli("maintenance", "cancel", "999", "--config", config)
    assert unknown.returncode == 2 and "ID: no maintenance announcement with id 999" in unknown.stderr

    listed = cli("maintenance", "list", "--config", config, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["kind"], r["cancelled"], r["cancel_reason"], r["cancelled_by"]) for r in rows] == [
        ("scheduled", True, "typo", "cli"), ("emergency", False, None, None)]
    listed = cli("maintenance", "list", "--config", config, "--policy", "sla")
    assert "CANCELLED" in listed.stdout.splitlines()[0] and "(cli, bob)" in listed.stdout


BAD_ANNOUNCEMENTS = [
    # the same messages as the API's (test_bad_maintenance_requests_are_named has them all)
    (["--kind", "normal"], "error: kind: policy 'sla' accepts no maintenance of kind 'normal'"),
    (["--end", "2026-10-03T09:00:00Z"], "error: end: must be after start"),
    (["--start", "tomorrow"], "error: start: Input should be a valid datetime"),
    (["--announced", "2999-01-01T00:00:00Z"], "error: announced: 2999-01-01T00:00:00Z is later than now"),
]


def test_cli_refuses_bad_input_with_the_api_messages(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")
    for args, message in BAD_ANNOUNCEMENTS:
        given = {"--policy": "sla", "--kind": "scheduled", "--start": "2026-10-03T10:00:00Z",
                 "--end": "2026-10-03T11:00:00Z"}
        given.update(dict(zip(args[::2], args[1::2])))
        done = cli("maintenance", "announce", "--config", config, *[x for kv in given.items() for x in kv])
        assert done.returncode == 2 and any(line.startswith(message) for line in done.stderr.splitlines()), (args, done.stderr)
        assert "Traceback" not in done.stderr
    listed = cli("maintenance", "list", "--config", config, "--format", "json")
    assert json.loads(listed.stdout) == []                   # nothing half-written


# -- the migration -------------------------------------------------------------------------------

async def _sql(url: str, statement: str, **params):
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(sa.text(statement), params)
            return result.mappings().all() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_migration_keeps_existing_announcements_as_recorded_and_refuses_to_revive_cancelled_ones(
        database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url, "0005")
    created, announced = datetime(2026, 11, 5, 8, 30, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    stamp = (lambda d: d.replace(tzinfo=None)) if database_url.startswith("sqlite") else (lambda d: d)
    await _sql(database_url, 'INSERT INTO maintenance (policy, kind, announced, start, "end", note, created_at) '
                             "VALUES ('sla', 'scheduled', :a, :s, :e, 'old', :c)",
               a=stamp(announced), s=stamp(announced + 10 * D), e=stamp(announced + 10 * D + H), c=stamp(created))
    await asyncio.to_thread(migrate.upgrade, database_url)
    [row] = await _sql(database_url, "SELECT recorded_at, stated_announced, recorded_by, author, cancelled_at "
                                     "FROM maintenance")
    def as_utc(value) -> datetime:   # SQLite hands raw columns back as text
        value = datetime.fromisoformat(value) if isinstance(value, str) else value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    assert (as_utc(row["recorded_at"]), as_utc(row["stated_announced"])) == (created, announced)
    assert (row["recorded_by"], row["author"], row["cancelled_at"]) == ("api", "", None)
    await _sql(database_url, "UPDATE maintenance SET cancelled_at = recorded_at")
    with pytest.raises(RuntimeError, match="cannot downgrade below 0006: 1 maintenance announcement"):
        await asyncio.to_thread(migrate.downgrade, database_url, "0005")
