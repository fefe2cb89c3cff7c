"""Credits and the termination right when some minutes have no evidence: the credit is given on
the best case (unknown minutes up, `percent`) and on the worst case (unknown minutes down,
`percent_worst`), flagged `depends_on_unknown`, instead of silently assuming the service was up."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.rules import credits
from collector.rules.policy import load_policy
from collector.rules.report import render_text
from test_rules_verdict import report
from rules_support import UTC, utc

M = timedelta(minutes=1)
CHICAGO = ZoneInfo("America/Chicago")
ZURICH = ZoneInfo("Europe/Zurich")


def ct(*a):
    return datetime(*a, tzinfo=CHICAGO).astimezone(UTC)


def zh(*a):
    return datetime(*a, tzinfo=ZURICH).astimezone(UTC)


def test_nexgen_pro_rata_is_a_range_over_the_unknown_minutes():
    # NexGen Service Level Addendum §3(c) pro-rata rebate, N / T: 100 minutes down and 150 unknown
    # in 43,200 give 100 / 43,200 = 0.2315 % if they were up and 250 / 43,200 = 0.5787 % if down
    r = report(load_policy("nexgen-gpu"), "2026-11", failed=[(utc(2026, 11, 10), 100)],
               unknown=[(utc(2026, 11, 20), 150)], fee=1000)
    c = r["credit"]
    assert c["percent"] == pytest.approx(100 / 432) and c["percent_worst"] == pytest.approx(250 / 432)
    assert c["depends_on_unknown"] is True
    assert (c["amount"], c["amount_worst"]) == (2.31, 5.79)
    assert any(note.startswith("depends on 150 unknown minutes") for note in c["notes"])


@pytest.mark.parametrize("plan, failed, silent, percent, percent_worst, below", [
    # Numezis SLA §7, October in Zurich = 44,700 minutes, Business guaranteed 99.5 %:
    # 200 down: 44,500 / 44,700 = 99.553 % (no credit); with 100 more down 99.329 %: 10 %
    ("numezis-business", 200, 100, 0, 10, None),
    # 2,000 down: 95.526 % (10 %); 300 more down: 94.855 % (25 %)
    ("numezis-business", 2000, 300, 10, 25, True),
    # 100 down, 100 unknown: worst 99.553 % is still above the guaranteed level
    ("numezis-business", 100, 100, 0, 0, False),
    # Enterprise guaranteed 99.9 %: 40 down = 99.911 %, 10 more = 99.888 %
    ("numezis-enterprise", 40, 10, 0, 10, None),
])
def test_numezis_tier_on_best_and_worst_case(plan, failed, silent, percent, percent_worst, below):
    at = zh(2026, 10, 5, 1)
    r = report(load_policy(plan), "2026-10", failed=[(at, failed)], unknown=[(at + 3 * 24 * 60 * M, silent)])
    c = r["credit"]
    assert (c["percent"], c["percent_worst"], c["below_guaranteed"]) == (percent, percent_worst, below)
    assert c["depends_on_unknown"] is (percent != percent_worst)


def test_vcms_half_day_per_started_hour_on_the_worst_case():
    # Haivision VCMS §5 "one-half day of Fees for each hour of Downtime or fraction thereof":
    # 50 minutes is one started hour (0.5 days); with 20 unknown minutes down, 70 is two (1 day)
    p = load_policy("haivision-vcms-write", target_percent=99.9)
    r = report(p, "2026-10", failed=[(ct(2026, 10, 5, 10), 50)], unknown=[(ct(2026, 10, 20, 10), 20)])
    c = r["credit"]
    assert (c["days"], c["days_worst"]) == (0.5, 1) and c["depends_on_unknown"] is True
    assert c["percent"] == pytest.approx(0.5 / 31 * 100) and c["percent_worst"] == pytest.approx(1 / 31 * 100)
    assert "Credit: half_day_per_started_hour, 0.5 to 1 days of fees, 1.6129 % to 3.2258 %" in render_text(r)


def test_streaming_day_credit_counts_the_days_an_outage_may_have_happened():
    # Haivision Streaming §8 "the fees for the day in which the failure occurs": a verified
    # 12-minute Outage on the 10th; on the 20th, 12 minutes (two 6-minute rounds) nobody reported
    p = load_policy("haivision-streaming")
    r = report(p, "2026-10", failed=[(ct(2026, 10, 10, 12), 12)], unknown=[(ct(2026, 10, 20, 12), 12)])
    c = r["credit"]
    assert (c["days"], c["dates"]) == (1, ["2026-10-10"])
    assert (c["days_worst"], c["dates_worst"]) == (2, ["2026-10-10", "2026-10-20"])
    # one silent round (6 minutes) between UP rounds could not be a 12-minute Outage: no range
    one = report(p, "2026-10", failed=[(ct(2026, 10, 10, 12), 12)], unknown=[(ct(2026, 10, 20, 12), 6)])
    assert one["credit"]["days_worst"] == 1 and one["credit"]["depends_on_unknown"] is False


@pytest.mark.parametrize("silent_at, silent, percent_worst", [
    # Nexcess SLA, "SLA Credits": 5 % per 15 minutes, outages not combined. A verified 10-minute
    # outage earns 0 %; 10 silent minutes right after it may have been the same outage: 20 -> 5 %
    (utc(2026, 11, 3, 10, 10), 10, 5),
    # 30 silent minutes on another day may have been an outage of their own: 0 % + 10 %
    (utc(2026, 11, 20, 10), 30, 10),
    # 10 silent minutes on another day: a 10-minute outage earns nothing either way
    (utc(2026, 11, 20, 10), 10, 0),
])
def test_nexcess_per_outage_credit_on_the_worst_case(silent_at, silent, percent_worst):
    r = report(load_policy("nexcess"), "2026-11", failed=[(utc(2026, 11, 3, 10), 10)], unknown=[(silent_at, silent)])
    c = r["credit"]
    assert c["percent"] == 0 and c["percent_worst"] == percent_worst
    assert c["depends_on_unknown"] is (percent_worst != 0)
    assert [o["credit_percent"] for o in r["outages"]] == [0]          # per outage: verified minutes only


# NexGen Service Level Addendum §4: "if we do not achieve the minimum uptime requirement for
# three consecutive months". A month that may or may not have achieved it is not a month that did.
@pytest.mark.parametrize("below, history, right", [
    (None, [("2026-09", 99.0), ("2026-08", 99.0)], None),                   # this month undetermined
    (None, [("2026-09", 100.0), ("2026-08", 99.0)], False),                 # September met: no right either way
    (True, [("2026-09", (100.0, 99.9)), ("2026-08", 99.0)], None),          # September best 100, worst 99.9
    (True, [("2026-09", (99.9, 99.8)), ("2026-08", 99.0)], True),           # below even at best
    (True, [("2026-09", {"met": None, "availability_percent": 100.0}), ("2026-08", 99.0)], None),
    (True, [("2026-09", {"met": False}), ("2026-08", {"availability_percent": 99.0,
                                                      "availability_worst_percent": 98.0})], True),
    (True, [("2026-09", {"availability_percent": 100.0, "availability_worst_percent": 100.0}),
            ("2026-08", 99.0)], False),
])
def test_termination_right_treats_undetermined_months_as_undetermined(below, history, right):
    assert credits.termination_right("2026-10", below, history, 3, 100.0)[0] is right


def test_nexgen_report_termination_right_is_undetermined_with_unknown_minutes():
    # target 100 %: no verified downtime but 5 unknown minutes: maybe down, maybe not
    p = load_policy("nexgen-storage")
    below = [("2026-10", 99.99), ("2026-09", 99.5)]
    r = report(p, "2026-11", unknown=[(utc(2026, 11, 10), 5)], history=below)
    assert r["verdict"] == "undetermined" and r["termination_right"] is None
    assert r["termination_note"] == "undetermined: 5 unknown minutes decide whether 2026-11 fell below 100.0 %"
    assert "Termination right       undetermined" in render_text(r)
    # one verified minute down: below at best, so the right holds whatever the unknown minutes were
    down = report(p, "2026-11", failed=[(utc(2026, 11, 3), 1)], unknown=[(utc(2026, 11, 10), 5)], history=below)
    assert down["verdict"] == "missed" and down["termination_right"] is True
