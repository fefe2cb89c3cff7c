"""Periods are local calendar months: T is the real number of minutes (issue 3, "Period")."""
from __future__ import annotations

import pytest

from collector.rules.model import minutes_between
from collector.rules.periods import days_in_month, month_bounds, period_of, previous_period
from rules_support import utc


@pytest.mark.parametrize("period, tz, start, end, minutes", [
    ("2026-10", "America/Chicago", utc(2026, 10, 1, 5), utc(2026, 11, 1, 5), 44_640),
    ("2026-11", "America/Chicago", utc(2026, 11, 1, 5), utc(2026, 12, 1, 6), 43_260),   # clocks back 1 Nov
    ("2026-03", "America/Chicago", utc(2026, 3, 1, 6), utc(2026, 4, 1, 5), 44_580),     # clocks forward 8 Mar
    ("2026-10", "Europe/Zurich", utc(2026, 9, 30, 22), utc(2026, 10, 31, 23), 44_700),  # clocks back 25 Oct
    ("2026-11", "UTC", utc(2026, 11, 1), utc(2026, 12, 1), 43_200),                       # NEXON §3.3
    ("2026-02", "UTC", utc(2026, 2, 1), utc(2026, 3, 1), 40_320),
    ("2028-02", "UTC", utc(2028, 2, 1), utc(2028, 3, 1), 41_760),
    ("2026-12", "Europe/Zurich", utc(2026, 11, 30, 23), utc(2026, 12, 31, 23), 44_640),
])
def test_month_bounds_and_real_minutes(period, tz, start, end, minutes):
    assert month_bounds(period, tz) == (start, end)
    assert minutes_between(start, end) == minutes


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "26-10", "October", "2026/10", ""])
def test_bad_period_is_named(bad):
    with pytest.raises(ValueError, match=f"period '{bad}' is not YYYY-MM"):
        month_bounds(bad, "UTC")


def test_helpers():
    assert days_in_month("2026-02") == 28 and days_in_month("2026-10") == 31
    assert previous_period("2026-01") == "2025-12"
    assert period_of(utc(2026, 10, 31, 23, 30), "Europe/Zurich") == "2026-11"
    assert period_of(utc(2026, 11, 1, 4, 59), "America/Chicago") == "2026-10"
