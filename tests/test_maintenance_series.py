"""Recurring maintenance: an RFC 5545 RRULE with a duration, each occurrence judged by the
contract's notice, window and budget rules as if announced when the series was recorded;
occurrences cancelled one by one; the same occurrences in live and offline reports."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from collector.app import create_app
from collector.config import parse_config
from collector.db import LogEntry
from collector.rules.model import Round, Verdict
from collector.rules.offline import InputError, evaluate_offline, read_maintenance, read_results
from collector.rules.periods import month_bounds
from collector.rules.policy import load_policy
from collector.rules.recurrence import (CancelledOccurrence, MaintenanceSeries, RecurrenceError, expand_maintenance,
                                        parse_recurrence)
from collector.rules.report import build_report
from collector.rules.windows import find_windows
from collector.service import CollectorState
from rules_support import utc

UTC = timezone.utc
CHICAGO = ZoneInfo("America/Chicago")
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


# -- expansion -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rrule, start, duration, tz, since, until, expected", [
    # every Sunday 02:00 UTC for 2 h: the five Sundays of November 2026
    ("FREQ=WEEKLY;BYDAY=SU", utc(2026, 10, 4, 2), "2h", "UTC", utc(2026, 11, 1), utc(2026, 12, 1),
     [utc(2026, 11, d, 2) for d in (1, 8, 15, 22, 29)]),
    # an occurrence that began before the range but overlaps it is in it; one ending at its start is not
    ("FREQ=WEEKLY;BYDAY=SU", utc(2026, 10, 4, 23), "2h", "UTC", utc(2026, 11, 2, 1), utc(2026, 11, 9),
     [utc(2026, 11, 8, 23)]),
    ("FREQ=WEEKLY;BYDAY=SU", utc(2026, 10, 4, 23), "2h", "UTC", utc(2026, 11, 2, 0, 30), utc(2026, 11, 9),
     [utc(2026, 11, 1, 23), utc(2026, 11, 8, 23)]),
    # the first Saturday of each month, 22:00 UTC, four hours (RFC 5545 BYDAY=1SA)
    ("FREQ=MONTHLY;BYDAY=1SA", utc(2026, 1, 3, 22), "PT4H", "UTC", utc(2026, 1, 1), utc(2026, 5, 1),
     [utc(2026, 1, 3, 22), utc(2026, 2, 7, 22), utc(2026, 3, 7, 22), utc(2026, 4, 4, 22)]),
    # the last Sunday of each month, 01:00 in Chicago: CST (UTC-6) in February, CDT (UTC-5) from March 8
    ("FREQ=MONTHLY;BYDAY=-1SU", local(2026, 2, 22, 1), "3h", "America/Chicago", utc(2026, 2, 1), utc(2026, 5, 1),
     [utc(2026, 2, 22, 7), utc(2026, 3, 29, 6), utc(2026, 4, 26, 6)]),
    # Sundays 02:00 in Chicago across the spring gap: 2026-03-08 02:00 does not exist and is read with
    # the offset before the gap (RFC 5545 §3.3.5), i.e. 08:00 UTC, 03:00 CDT
    ("FREQ=WEEKLY;BYDAY=SU", local(2026, 3, 1, 2), "2h", "America/Chicago", utc(2026, 3, 1), utc(2026, 3, 16),
     [utc(2026, 3, 1, 8), utc(2026, 3, 8, 8), utc(2026, 3, 15, 7)]),
    # ... and across the autumn change: 2026-11-01 01:30 happens twice, the first (CDT) counts
    ("FREQ=WEEKLY;BYDAY=SU", local(2026, 10, 25, 1, 30), "30m", "America/Chicago", utc(2026, 10, 25),
     utc(2026, 11, 9), [utc(2026, 10, 25, 6, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 8, 7, 30)]),
    # COUNT ends the series; a rule without COUNT or UNTIL only yields what the range asks for
    ("FREQ=DAILY;COUNT=3", utc(2026, 11, 1, 4), "1h", "UTC", utc(2026, 11, 1), utc(2026, 12, 1),
     [utc(2026, 11, d, 4) for d in (1, 2, 3)]),
    ("FREQ=HOURLY", utc(2026, 1, 1), "1h", "UTC", utc(2029, 1, 1), utc(2029, 1, 1, 3),
     [utc(2029, 1, 1, h) for h in (0, 1, 2)]),
    ("FREQ=DAILY;UNTIL=20261103T000000Z", utc(2026, 11, 1, 4), "1h", "UTC", utc(2026, 11, 1), utc(2026, 12, 1),
     [utc(2026, 11, 1, 4), utc(2026, 11, 2, 4)]),
])
def test_expansion_gives_the_occurrences_overlapping_the_range(rrule, start, duration, tz, since, until, expected):
    recurrence = parse_recurrence(rrule, start, duration, tz)
    occurrences = recurrence.occurrences(since, until)
    assert [s for s, _ in occurrences] == expected
    assert all(e - s == recurrence.duration for s, e in occurrences)


@pytest.mark.parametrize("rrule, duration, tz, message", [
    ("FREQ=SOMETIMES", "1h", "UTC", "rrule: FREQ=SOMETIMES is not a frequency"),
    ("BYDAY=SU", "1h", "UTC", "rrule: FREQ is required"),
    ("FREQ=WEEKLY;BYDAY=XX", "1h", "UTC", "rrule: FREQ=WEEKLY;BYDAY=XX does not parse"),
    ("FREQ=MINUTELY;INTERVAL=90", "1h", "UTC", "rrule: FREQ=MINUTELY is finer than hourly"),
    ("FREQ=HOURLY;BYMINUTE=0,30", "10m", "UTC", "rrule: FREQ=HOURLY;BYMINUTE=0,30 has occurrences 30m apart"),
    ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "1h", "UTC", "rrule: FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30: no date matches"),
    ("FREQ=WEEKLY;BYDAY=1SU", "1h", "UTC", "rrule: BYDAY=1SU: a numbered weekday needs FREQ=MONTHLY or YEARLY"),
    ("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z", "1h", "UTC", "rrule: COUNT and UNTIL together"),
    ("DTSTART:20261101T020000Z\nRRULE:FREQ=DAILY", "1h", "UTC", "rrule: give only the RRULE value"),
    ("FREQ=DAILY;EXDATE=20261102", "1h", "UTC", "rrule: EXDATE is not accepted"),
    ("FREQ=DAILY", "0", "UTC", "duration: must be more than 0"),
    ("FREQ=DAILY", "-2h", "UTC", "duration: '-2h' is not a duration"),
    ("FREQ=DAILY", "PT", "UTC", "duration: 'PT' is not an RFC 5545 duration"),
    ("FREQ=DAILY", "25h", "UTC", "duration: 25h is longer than the 1d between occurrences"),
    # 24 hours every day at 02:00 Chicago: on 2026-03-08 only 23 hours separate two occurrences
    ("FREQ=DAILY", "24h", "America/Chicago", "duration: 1d is longer than the 23h between occurrences"),
    ("FREQ=DAILY", "1h", "Mars/Olympus", "timezone: unknown time zone 'Mars/Olympus'"),
    # INTERVAL=0 would make python-dateutil loop for ever
    ("FREQ=DAILY;INTERVAL=0", "1h", "UTC", "rrule: INTERVAL=0: from 1 to 10000"),
    ("FREQ=YEARLY", "400d", "UTC", "duration: at most 366d"),
])
def test_bad_series_are_refused_naming_the_field(rrule, duration, tz, message):
    with pytest.raises(RecurrenceError) as err:
        parse_recurrence(rrule, local(2026, 1, 1, 2), duration, tz)
    assert str(err.value).startswith(message), str(err.value)


def test_a_start_beyond_what_can_be_expanded_is_refused():
    with pytest.raises(RecurrenceError, match=r"^start: 9999-12-31T23:00:00Z is outside 1970..2200"):
        parse_recurrence("FREQ=DAILY", utc(9999, 12, 31, 23), "1h")


def test_a_rule_no_date_matches_is_refused_at_once():
    # python-dateutil looks for an occurrence of such a rule up to the year 9999 (seconds for an
    # hourly rule); a yearly probe of its day filters answers first
    import time
    began = time.perf_counter()
    with pytest.raises(RecurrenceError, match="no date matches"):
        parse_recurrence("FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=31", utc(2026, 1, 1), "1h")
    assert time.perf_counter() - began < 1.5


# -- judged as if announced when the series was recorded -----------------------------------------

_MONTHS: dict[tuple, tuple[list, list]] = {}


def month_report(policy, period, failed, maintenance):
    """A round for every slot of the month, FAILED within any of the `failed` intervals, else UP;
    the series expanded for the month as the offline entry points do."""
    start, end = month_bounds(period, policy.tz)
    key = (policy.name, period, tuple(failed))
    if key not in _MONTHS:   # the same month's rounds serve several tests
        step = timedelta(seconds=policy.interval)
        rounds, t = [], start
        while t < end:
            down = any(a <= t < b for a, b in failed)
            rounds.append(Round(t, Verdict.FAILED if down else Verdict.UP, ()))
            t += step
        _MONTHS[key] = rounds, find_windows(policy, rounds)
    rounds, windows = _MONTHS[key]
    return build_report(policy, period, rounds, windows, expand_maintenance(maintenance, start, end))


def sunday_series(policy_kind, recorded_at, *, cancelled=()):
    """Every Sunday 02:00 UTC for 2 h from 1 November 2026."""
    return MaintenanceSeries(policy_kind, parse_recurrence("FREQ=WEEKLY;BYDAY=SU", utc(2026, 11, 1, 2), "2h"),
                             recorded_at=recorded_at, recorded_by="api", id=7, cancelled_occurrences=tuple(cancelled))


SUNDAYS = [(utc(2026, 11, d, 2), utc(2026, 11, d, 4)) for d in (1, 8, 15, 22, 29)]


@pytest.mark.parametrize("recorded_before, excluded_sundays", [
    (4 * D, [1, 8, 15, 22, 29]),    # 4 days before the first Sunday: every occurrence had its 72 h
    (2 * D, [8, 15, 22, 29]),       # 2 days: the first had 48 h only; the rest had more than 72 h
    (-1 * D, [8, 15, 22, 29]),      # recorded a day after the first one began (no ex post notice for planned)
])
def test_numezis_occurrences_each_need_72_hours_from_when_the_series_was_recorded(recorded_before, excluded_sundays):
    # Numezis SaaS SLA §4.1: planned maintenance longer than 15 minutes "will be announced at least
    # 72 hours in advance". Each two-hour Sunday is an outage the series may excuse.
    policy = load_policy("numezis-business")
    series = sunday_series("planned", utc(2026, 11, 1, 2) - recorded_before)
    r = month_report(policy, "2026-11", SUNDAYS, [series])
    assert r["outage_minutes"] == 5 * 120
    assert r["excluded_minutes"] == 120 * len(excluded_sundays)
    assert r["downtime_minutes"] == 120 * (5 - len(excluded_sundays))
    by_start = {m["start"]: m for m in r["maintenance"]}
    assert sorted(by_start) == [z(s) for s, _ in SUNDAYS]
    for start, _ in SUNDAYS:
        m = by_start[z(start)]
        assert m["series_id"] == 7 and m["recorded_at"] == z(series.recorded)
        assert m["notice"]["rule"] == "min_notice"
        assert m["compliant"] is (start.day in excluded_sundays), m


def test_nexon_series_recorded_too_late_excludes_nothing_of_the_month():
    # NEXON Vision SLA §4.1: scheduled maintenance notified "at least 24 hours in advance"; a series
    # recorded after the month's occurrences (it cannot excuse them after the fact) against one
    # recorded the week before.
    nexon = load_policy("nexon-vision")
    late = sunday_series("scheduled", utc(2026, 11, 30))
    early = sunday_series("scheduled", utc(2026, 10, 25))
    assert month_report(nexon, "2026-11", SUNDAYS, [late])["excluded_minutes"] == 0
    assert month_report(nexon, "2026-11", SUNDAYS, [late])["met"] is False
    r = month_report(nexon, "2026-11", SUNDAYS, [early])
    assert (r["excluded_minutes"], r["downtime_minutes"], r["met"]) == (600, 0, True)


def test_a_cancelled_occurrence_excludes_nothing_and_the_others_still_do():
    nexon = load_policy("nexon-vision")
    cancelled = CancelledOccurrence(utc(2026, 11, 15, 2), utc(2026, 11, 14, 9), "postponed", "api")
    r = month_report(nexon, "2026-11", SUNDAYS, [sunday_series("scheduled", utc(2026, 10, 25), cancelled=[cancelled])])
    assert (r["excluded_minutes"], r["downtime_minutes"]) == (480, 120)
    [m] = [m for m in r["maintenance"] if m["start"] == "2026-11-15T02:00:00Z"]
    assert m["cancelled_at"] == "2026-11-14T09:00:00Z" and m["cancel_reason"] == "postponed"
    assert [b["rule"] for b in m["broken_rules"]] == ["cancelled"]


def test_a_cancelled_series_has_no_occurrence_after_its_cancellation_and_the_earlier_ones_stand():
    nexon = load_policy("nexon-vision")
    series = MaintenanceSeries("scheduled", parse_recurrence("FREQ=WEEKLY;BYDAY=SU", utc(2026, 11, 1, 2), "2h"),
                               recorded_at=utc(2026, 10, 25), cancelled_at=utc(2026, 11, 10), cancel_reason="ended")
    assert [a.start.day for a in series.announcements(utc(2026, 11, 1), utc(2026, 12, 1))] == [1, 8]
    r = month_report(nexon, "2026-11", SUNDAYS, [series])
    assert (r["excluded_minutes"], r["downtime_minutes"]) == (240, 360)


def test_haivision_window_is_kept_in_central_time_and_the_monthly_budget_is_shared():
    # Haivision SLA §4, Normal Maintenance: "Maximum Time Per Month 10 Hours | Continuous Time in
    # Mode (Max) 6 Hours | Window (Central Time) 10:00pm - 5:00am | Min Notice 48 Hours".
    policy = load_policy("haivision-streaming")
    recorded = utc(2026, 2, 1)
    # 04:00-05:00 Chicago every Sunday of March, recorded in Chicago time: inside the window also
    # after the change to CDT on 8 March; the same hour written in UTC (10:00Z, 04:00 CST) leaves
    # the window once 10:00Z is 05:00 CDT.
    in_chicago = MaintenanceSeries("normal", parse_recurrence("FREQ=WEEKLY;BYDAY=SU", local(2026, 3, 1, 4), "1h",
                                                              "America/Chicago"), recorded_at=recorded, id=1)
    in_utc = MaintenanceSeries("normal", parse_recurrence("FREQ=WEEKLY;BYDAY=SU", utc(2026, 3, 1, 10), "1h"),
                               recorded_at=recorded, id=2)
    sundays = [local(2026, 3, d, 4) for d in (1, 8, 15, 22, 29)]
    failed = [(s.astimezone(UTC), s.astimezone(UTC) + H) for s in sundays]
    r = month_report(policy, "2026-03", failed, [in_chicago])
    assert [m["compliant"] for m in r["maintenance"]] == [True] * 5
    assert r["excluded_minutes"] == 300
    r = month_report(policy, "2026-03", failed, [in_utc])
    assert [m["compliant"] for m in r["maintenance"]] == [True, False, False, False, False]
    assert [b["rule"] for b in r["maintenance"][1]["broken_rules"]] == ["window"]
    # 3 h every night of March from 23:00 Chicago: 10 h of budget cover three nights and an hour of
    # the fourth; later nights excuse nothing
    nightly = MaintenanceSeries("normal", parse_recurrence("FREQ=DAILY", local(2026, 3, 1, 23), "3h",
                                                           "America/Chicago"), recorded_at=recorded, id=3)
    nights = [(local(2026, 3, d, 23).astimezone(UTC), local(2026, 3, d, 23).astimezone(UTC) + 3 * H) for d in range(1, 6)]
    r = month_report(policy, "2026-03", nights, [nightly])
    assert r["excluded_minutes"] == 600
    fourth = next(m for m in r["maintenance"] if m["start"] == z(local(2026, 3, 4, 23)))
    assert fourth["allowed_minutes"] == 60 and [b["rule"] for b in fourth["broken_rules"]] == ["budget"]


# -- offline files -------------------------------------------------------------------------------

def test_offline_file_takes_series_and_refuses_bad_ones_naming_line_and_field(tmp_path: Path):
    nexon = load_policy("nexon-vision")
    path = tmp_path / "maintenance.jsonl"
    path.write_text(json.dumps({"kind": "scheduled", "start": "2026-11-01T02:00:00Z", "rrule": "FREQ=WEEKLY;BYDAY=SU",
                                "duration": "2h", "recorded_at": "2026-10-25T00:00:00Z",
                                "cancelled_occurrences": [{"start": "2026-11-15T02:00:00Z",
                                                           "cancelled_at": "2026-11-14T09:00:00Z"}]}) + "\n")
    [series] = read_maintenance(path, kinds=list(nexon.maintenance))
    assert isinstance(series, MaintenanceSeries) and series.recorded_by == "file"
    r = month_report(nexon, "2026-11", SUNDAYS, [series])
    assert r["excluded_minutes"] == 480
    for row, message in [
        ({"rrule": "FREQ=MINUTELY", "duration": "1h"}, "m.jsonl:1: field 'rrule': FREQ=MINUTELY is finer than hourly"),
        ({"rrule": "FREQ=DAILY", "duration": "0"}, "m.jsonl:1: field 'duration': must be more than 0"),
        ({"rrule": "FREQ=DAILY", "duration": "1h", "end": "2026-11-01T03:00:00Z"},
         "m.jsonl:1: field 'end': a recurring maintenance line has a duration, not an end"),
        ({"duration": "1h"}, "m.jsonl:1: field 'rrule': missing"),
        ({"rrule": "FREQ=DAILY", "duration": "1h", "cancelled_occurrences": [
            {"start": "2026-11-02T03:00:00Z", "cancelled_at": "2026-11-01T00:00:00Z"}]},
         "m.jsonl:1: field 'cancelled_occurrences[0].start': 2026-11-02T03:00:00Z is not an occurrence"),
    ]:
        bad = tmp_path / "m.jsonl"
        bad.write_text(json.dumps({"kind": "scheduled", "start": "2026-11-01T02:00:00Z",
                                   "recorded_at": "2026-10-25T00:00:00Z", **row}) + "\n")
        with pytest.raises(InputError) as err:
            read_maintenance(bad)
        assert str(err.value).startswith(message), str(err.value)


# -- the API, the live report and the offline report ---------------------------------------------

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


async def post_outage(api) -> tuple[datetime, list[dict]]:
    """Every agent fails minutes 2-6 of the hour two hours ago (a 5-minute verified outage); the
    results as an offline results file holds them."""
    base = (datetime.now(UTC) - 2 * H).replace(minute=0, second=0, microsecond=0)
    rows = []
    for agent, token in TOKENS.items():
        results = [{"id": uuid.uuid4().hex, "check": "web", "slot": (base + i * M).isoformat(),
                    "started": (base + i * M).isoformat(), "ok": not 2 <= i < 7, "latency_ms": None,
                    "status_code": None, "error": None if not 2 <= i < 7 else "connect"} for i in range(12)]
        resp = await api.post("/api/v1/results", json={"agent": agent, "results": results},
                              headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, await resp.text()
        rows += [{"agent": agent, "check": "web", "ts": r["slot"], "ok": r["ok"]} for r in results]
    await api.state.evaluator.tick()
    return base, rows


async def live_report(api, moment: datetime) -> dict:
    resp = await api.get("/api/v1/reports/sla", params={"period": f"{moment:%Y-%m}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def offline_report(api, period: str, result_rows: list[dict], listing: dict, tmp_path: Path) -> dict:
    """The report `uptime-collector report --results --maintenance` gives from what the API lists."""
    results, maintenance = tmp_path / "results.jsonl", tmp_path / "maintenance.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in result_rows))
    maintenance.write_text("".join(json.dumps(s) + "\n" for s in listing["maintenance"] + listing["series"]))
    policy = api.state.policies["sla"]
    return evaluate_offline(policy, read_results(results), period,
                            read_maintenance(maintenance, kinds=list(policy.maintenance)))


def figures(report: dict) -> tuple:
    return (report["outage_minutes"], report["excluded_minutes"], report["downtime_minutes"],
            [(m["start"], m["kind"], m["compliant"], m["allowed_minutes"], [b["rule"] for b in m["broken_rules"]])
             for m in report["maintenance"]])


async def test_series_through_the_api_judged_cancelled_by_occurrence_and_equal_offline(api, tmp_path: Path) -> None:
    base, rows = await post_outage(api)
    # Nexcess SLA, SLA Credit Exclusion 1: scheduled maintenance "broadcast ... when possible in
    # advance" is recorded by its start (the preset's reading); emergency maintenance may be
    # recorded after it began. Both series cover the outage with their occurrence at `base`.
    hourly = {"policy": "sla", "start": z(base - 3 * H), "rrule": "FREQ=HOURLY;COUNT=8", "duration": "10m"}
    before = datetime.now(UTC).replace(microsecond=0)
    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={**hourly, "kind": "scheduled", "author": "ops"})
    assert resp.status == 201, await resp.text()
    scheduled = await resp.json()
    assert scheduled["recorded_by"] == "api" and scheduled["author"] == "ops" and scheduled["rrule"] == "FREQ=HOURLY;COUNT=8"
    assert before <= datetime.fromisoformat(scheduled["recorded_at"].replace("Z", "+00:00")) <= datetime.now(UTC)
    # of the next occurrences, those recorded before they start are compliant; one in progress is not
    judged = scheduled["judgement"]
    assert judged and [j["start"] for j in judged] == [o["start"] for o in scheduled["next_occurrences"]]
    assert [j["compliant"] for j in judged] == [j["start"] >= scheduled["recorded_at"] for j in judged]
    r = await live_report(api, base)
    assert (r["outage_minutes"], r["excluded_minutes"]) == (5, 0)
    at_base = next(m for m in r["maintenance"] if m["start"] == z(base))
    assert at_base["series_id"] == scheduled["id"] and at_base["notice"]["rule"] == "by_start"
    assert [b["rule"] for b in at_base["broken_rules"]] == ["notice"]

    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={**hourly, "kind": "emergency"})
    emergency = await resp.json()
    r = await live_report(api, base)
    assert (r["excluded_minutes"], r["downtime_minutes"]) == (5, 0)

    listing = await (await api.get("/api/v1/maintenance", params={"policy": "sla"})).json()
    assert figures(offline_report(api, f"{base:%Y-%m}", rows, listing, tmp_path)) == figures(r)

    # cancel the emergency occurrence at `base`: it stays listed, cancelled by the collector's clock
    resp = await api.delete(f"/api/v1/maintenance/series/{emergency['id']}/occurrences/{z(base)}", headers=ADMIN,
                            json={"reason": "not needed"})
    assert resp.status == 200, await resp.text()
    cancelled = await resp.json()
    assert (cancelled["start"], cancelled["end"]) == (z(base), z(base + 10 * M))
    assert cancelled["cancelled_by"] == "api" and cancelled["cancelled_at"] >= emergency["recorded_at"]
    r = await live_report(api, base)
    assert (r["excluded_minutes"], r["downtime_minutes"]) == (0, 5)
    at_base = next(m for m in r["maintenance"] if m["start"] == z(base) and m["series_id"] == emergency["id"])
    assert [b["rule"] for b in at_base["broken_rules"]] == ["cancelled"]
    listing = await (await api.get("/api/v1/maintenance", params={"policy": "sla"})).json()
    [listed] = [s for s in listing["series"] if s["id"] == emergency["id"]]
    assert [(c["start"], c["cancel_reason"], c["cancelled_at"]) for c in listed["cancelled_occurrences"]] == [
        (z(base), "not needed", cancelled["cancelled_at"])]
    assert figures(offline_report(api, f"{base:%Y-%m}", rows, listing, tmp_path)) == figures(r)

    # the first cancellation stands; a start that is no occurrence is named
    again = await api.post(f"/api/v1/maintenance/series/{emergency['id']}/cancellations", headers=ADMIN,
                           json={"start": z(base), "reason": "twice"})
    assert again.status == 409 and "already cancelled at" in (await again.json())["error"]
    odd = await api.post(f"/api/v1/maintenance/series/{emergency['id']}/cancellations", headers=ADMIN,
                         json={"start": z(base + 5 * M)})
    assert odd.status == 422 and (await odd.json())["error"].startswith(f"start: {z(base + 5 * M)} is not the start")
    # the whole series: cancelled once, listed as cancelled
    resp = await api.delete(f"/api/v1/maintenance/series/{scheduled['id']}", headers=ADMIN, params={"reason": "done"})
    assert resp.status == 200 and (await resp.json())["cancelled"] is True
    assert (await api.delete(f"/api/v1/maintenance/series/{scheduled['id']}", headers=ADMIN)).status == 409
    # every record and cancellation is appended to the evidence log, in order
    async with api.state.sessionmaker() as session:
        entries = (await session.scalars(select(LogEntry.entry).where(LogEntry.kind == "maintenance_series")
                                         .order_by(LogEntry.index))).all()
    logged = [json.loads(bytes(e)) for e in entries]
    assert [e["type"] for e in logged] == ["maintenance_series", "maintenance_series",
                                           "maintenance_occurrence_cancelled", "maintenance_series"]
    # the log's canonical times drop trailing zeros of the microseconds (docs/evidence.md): compare instants
    record = dict(logged[2]["record"])
    moment = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    assert moment(record.pop("cancelled_at")) == moment(cancelled["cancelled_at"])
    assert record == {"series_id": emergency["id"], "start": z(base), "cancelled_by": "api",
                      "cancel_reason": "not needed"}
    assert logged[3]["record"]["cancel_reason"] == "done" and logged[3]["record"]["id"] == scheduled["id"]


BAD_SERIES = [
    ({"rrule": "FREQ=WEEKLY;BYDAY=SU;BYFOO=1", "duration": "2h"}, 422, "rrule: BYFOO is not accepted"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=SU", "duration": "0"}, 422, "duration: must be more than 0"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=SU", "duration": "8d"}, 422, "duration: 8d is longer than the 7d between occurrences"),
    ({"rrule": "FREQ=MINUTELY", "duration": "1m"}, 422, "rrule: FREQ=MINUTELY is finer than hourly"),
    ({"rrule": "FREQ=WEEKLY", "duration": "2h", "timezone": "Nowhere/City"}, 422, "timezone: unknown time zone"),
    ({"rrule": "FREQ=WEEKLY", "duration": "2h", "end": "2026-11-01T04:00:00Z"}, 422, "end: a recurring maintenance has a duration"),
    ({"rrule": "FREQ=WEEKLY"}, 422, "duration: Field required"),
    ({"rrule": "FREQ=WEEKLY", "duration": "2h", "kind": "normal"}, 422, "kind: policy 'sla' accepts no maintenance of kind 'normal'"),
    ({"rrule": "FREQ=WEEKLY", "duration": "2h", "recorded_at": "2026-10-01T00:00:00Z"}, 422, "recorded_at: unknown field"),
]
BAD_CANCELLATIONS = [
    ("/api/v1/maintenance/series/999", 404, "id: no maintenance series with id 999"),
    ("/api/v1/maintenance/series/abc", 404, "id: no maintenance series with id 'abc'"),
    ("/api/v1/maintenance/series/999/occurrences/2026-11-01T02:00:00Z", 404, "id: no maintenance series"),
    ("/api/v1/maintenance/series/1/occurrences/sunday", 422, "start: 'sunday' is not an RFC 3339 timestamp"),
]


async def test_bad_series_and_cancellations_are_refused_naming_the_field(api) -> None:
    # one collector for the whole table (each request is refused on its own)
    for body, status, message in BAD_SERIES:
        resp = await api.post("/api/v1/maintenance", headers=ADMIN,
                              json={"policy": "sla", "kind": "scheduled", "start": "2026-11-01T02:00:00Z", **body})
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"].startswith(message), body
    assert (await (await api.get("/api/v1/maintenance")).json())["series"] == []   # nothing half-written
    for path, status, message in BAD_CANCELLATIONS:
        resp = await api.delete(path, headers=ADMIN)
        assert resp.status == status, (path, await resp.text())
        assert (await resp.json())["error"].startswith(message), path
        assert (await api.delete(path)).status == 401
    resp = await api.post("/api/v1/maintenance/series/1/cancellations", headers=ADMIN, json={"start": "soon"})
    assert resp.status == 422 and (await resp.json())["error"].startswith("start: Input should be a valid datetime")


# -- the CLI -------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_records_lists_and_cancels_an_occurrence_and_refuses_bad_series(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text(yaml.safe_dump(config_data(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")))
    bad = cli("maintenance", "announce", "--config", str(config), "--policy", "sla", "--kind", "scheduled",
              "--start", "2026-11-01T02:00:00Z", "--rrule", "FREQ=WEEKLY;BYDAY=SU", "--duration", "8d")
    assert bad.returncode == 2, bad.stderr
    assert any(line.startswith("error: duration: 8d is longer than") for line in bad.stderr.splitlines()), bad.stderr
    assert "Traceback" not in bad.stderr
    done = cli("maintenance", "announce", "--config", str(config), "--policy", "sla", "--kind", "scheduled",
               "--start", "2026-11-01T02:00:00Z", "--rrule", "FREQ=WEEKLY;BYDAY=SU", "--duration", "2h",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    series = json.loads(done.stdout)
    assert series["recorded_by"] == "cli" and series["id"] == 1   # the refused one left nothing behind
    start = series["next_occurrences"][0]["start"]
    cancelled = cli("maintenance", "cancel-occurrence", "1", "--start", start, "--config", str(config),
                    "--reason", "holiday")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled the occurrence {start}" in cancelled.stdout
    listed = cli("maintenance", "list", "--config", str(config), "--format", "json")
    [row] = json.loads(listed.stdout)
    assert [(c["start"], c["cancel_reason"], c["cancelled_by"]) for c in row["cancelled_occurrences"]] == [
        (start, "holiday", "cli")]
