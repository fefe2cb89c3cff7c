"""Credit rules and claim deadlines, each on its own (issue 3, "Credits and claims")."""
from __future__ import annotations

from datetime import date, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from collector.rules import credits
from collector.rules.claims import business_days_after, calendar_days_after, claim_deadline
from collector.rules.periods import month_bounds
from collector.rules.policy import load_policy
from rules_support import UTC, utc

CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize("availability, guaranteed, percent", [
    ("99.5", 99.5, 0),       # at the guaranteed level: no credit
    ("99.49", 99.5, 10),
    ("95.0", 99.5, 10),      # ">= 95.0": 10 %
    ("94.99", 99.5, 25),
    ("90.0", 99.5, 25),
    ("89.99", 99.5, 50),
    ("0", 99.9, 50),
    ("99.9", 99.9, 0),
    ("99.89", 99.9, 10),
])
def test_tiered_percent_numezis_bands(availability, guaranteed, percent):
    bands = load_policy("numezis-business").credit.bands
    assert credits.tiered_percent(Fraction(availability), guaranteed, bands)[0] == percent


@pytest.mark.parametrize("minutes, days_in_month, days, capped", [
    (0, 31, 0, False),
    (1, 31, Fraction(1, 2), False),        # a fraction of an hour is an hour
    (60, 31, Fraction(1, 2), False),
    (61, 31, 1, False),
    (Fraction(601, 10), 30, 1, False),     # 60.1 minutes: two started hours
    (3720, 31, 31, False),                 # 62 hours: 31 days, exactly one month
    (3721, 31, 31, True),                  # 63 started hours would be 31.5 days: capped at the month
    (100 * 60, 30, 30, True),
])
def test_half_day_per_started_hour(minutes, days_in_month, days, capped):
    result = credits.half_day_per_started_hour(Fraction(minutes), days_in_month)
    assert result["days"] == days and result["capped"] == capped
    assert result["percent"] == Fraction(days) / days_in_month * 100


def test_outage_days_are_local_calendar_days():
    def ct(*a):
        return datetime(*a, tzinfo=CHICAGO).astimezone(UTC)
    pieces = [(ct(2026, 10, 10, 23, 54), ct(2026, 10, 11, 0, 6)),     # across local midnight: two days
              (ct(2026, 10, 11, 12, 0), ct(2026, 10, 11, 12, 12)),    # the 11th again
              (ct(2026, 10, 20, 0, 0), ct(2026, 10, 20, 0, 12))]
    assert credits.outage_days(pieces, CHICAGO) == [date(2026, 10, 10), date(2026, 10, 11), date(2026, 10, 20)]
    # a piece ending exactly at local midnight does not touch the next day
    assert credits.outage_days([(ct(2026, 10, 10, 23, 48), ct(2026, 10, 11, 0, 0))], CHICAGO) == [date(2026, 10, 10)]


def test_day_per_outage_day_cap():
    def ct(*a):
        return datetime(*a, tzinfo=CHICAGO).astimezone(UTC)
    pieces = [(ct(2026, 10, d, 12), ct(2026, 10, d, 12, 12)) for d in range(1, 32)]
    result = credits.day_per_outage_day(pieces, CHICAGO, 30)
    assert (result["days"], result["capped"], len(result["dates"])) == (30, True, 31)


@pytest.mark.parametrize("qualifying, percent", [(0, 0), (14, 0), (Fraction(899, 60), 0), (15, 5), (29, 5),
                                                 (30, 10), (44, 10), (45, 15), (300, 100), (315, 105)])
def test_per_outage_increment(qualifying, percent):
    assert credits.per_outage_increment(Fraction(qualifying), Fraction(15), 5) == percent


def test_per_outage_total_is_capped():
    assert credits.capped_total([Fraction(60), Fraction(45)], 100) == (100, True)
    assert credits.capped_total([Fraction(60), Fraction(40)], 100) == (100, False)


def test_pro_rata():
    assert credits.pro_rata(Fraction(432), Fraction(43200), 100) == (1, False)
    assert credits.pro_rata(Fraction(43200), Fraction(43200), 100) == (100, False)
    assert credits.pro_rata(Fraction(0), Fraction(0), 100) == (0, False)


@pytest.mark.parametrize("below, history, right", [
    (True, [("2026-09", 99.9), ("2026-08", 99.0)], True),
    (True, {"2026-09": 99.9, "2026-08": 100.0}, False),      # August met the target
    (False, [("2026-09", 99.9), ("2026-08", 99.0)], False),  # this month met it
    (True, [("2026-09", 99.9)], None),                        # August unknown
    (True, [("2026-09", 99.9), ("2026-08", None)], None),
    (True, [("2026-09", 99.9), ("2026-07", 99.0)], None),     # not consecutive
])
def test_nexgen_termination_right_needs_three_consecutive_months(below, history, right):
    assert credits.termination_right("2026-10", below, history, 3, 100.0)[0] is right


# -- claim deadlines -----------------------------------------------------------------------------
def test_business_days_counted_by_hand():
    # October 2026 ends at local midnight, Sunday 1 November (Chicago). Business days after it:
    # Mon 2 (1), Tue 3 (2), Wed 4 (3), Thu 5 (4), Fri 6 (5), Mon 9 (6), Tue 10 (7), Wed 11 (8),
    # Thu 12 (9), Fri 13 (10) -> 13 November.
    _, end = month_bounds("2026-10", CHICAGO)
    assert date(2026, 11, 1).weekday() == 6
    assert business_days_after(end, 10, CHICAGO) == date(2026, 11, 13)
    # November 2026 ends Tuesday 1 December: Dec 1-4 (4), 7-11 (9), Mon 14 (10)
    _, end = month_bounds("2026-11", CHICAGO)
    assert business_days_after(end, 10, CHICAGO) == date(2026, 12, 14)


def test_calendar_days():
    _, end = month_bounds("2026-10", "UTC")
    assert calendar_days_after(end, 5, UTC) == date(2026, 11, 5)
    # an outage ending at 14:00 on the 10th: 7 days after -> the 17th; ending at midnight: the same
    assert calendar_days_after(utc(2026, 10, 10, 14), 7, UTC) == date(2026, 10, 17)
    assert calendar_days_after(utc(2026, 10, 11, 0), 7, UTC) == date(2026, 10, 17)


@pytest.mark.parametrize("preset, period, deadline, at", [
    ("nexgen-gpu", "2026-10", "2026-11-05", "2026-11-06T00:00:00Z"),
    ("numezis-business", "2026-10", "2026-11-30", "2026-11-30T23:00:00Z"),     # midnight in Zurich (CET)
    ("numezis-enterprise", "2026-11", "2026-12-30", "2026-12-30T23:00:00Z"),     # 1-30 December
    ("haivision-vcms-write", "2026-10", "2026-11-13", "2026-11-14T06:00:00Z"),  # midnight in Chicago (CST)
    ("haivision-vcms-read", "2026-11", "2026-12-14", "2026-12-15T06:00:00Z"),
    ("nexgen-storage", "2026-12", "2027-01-05", "2027-01-06T00:00:00Z"),
])
def test_period_claim_deadlines(preset, period, deadline, at):
    p = load_policy(preset, target_percent=99.9) if preset.startswith("haivision-vcms") else load_policy(preset)
    _, end = month_bounds(period, p.tz)
    result = claim_deadline(p, period_end=end)
    assert (result["claim_deadline"], result["claim_deadline_at"]) == (deadline, at)


def test_no_deadline_where_the_contract_has_none():
    for preset in ("haivision-streaming", "nexon-vision", "numezis-starter"):
        p = load_policy(preset)
        result = claim_deadline(p, period_end=month_bounds("2026-10", p.tz)[1])
        assert result["claim_deadline"] is None and result["claim_deadline_at"] is None and result["claim_note"]


def test_nexcess_deadline_runs_from_the_outage_end():
    p = load_policy("nexcess")
    result = claim_deadline(p, outage_end=utc(2026, 10, 10, 14, 17))
    assert (result["claim_deadline"], result["claim_deadline_at"]) == ("2026-10-17", "2026-10-18T00:00:00Z")
    assert claim_deadline(p, outage_end=None)["claim_deadline"] is None
