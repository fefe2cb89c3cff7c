"""Periods: calendar months in the policy's time zone, as UTC instants.

A month is [local midnight of the 1st, local midnight of the next 1st), so T is the real number of
minutes in it: 44,640 for October 2026 in America/Chicago, 43,260 for November 2026 there (the
clocks go back on 1 November), 44,700 for October 2026 in Europe/Zurich.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

__all__ = ["month_bounds", "parse_period", "period_of", "previous_period", "next_period",
           "days_in_month", "local_midnight", "next_local_midnight", "zone"]

UTC = timezone.utc
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


def zone(tz: str | ZoneInfo | timezone) -> ZoneInfo | timezone:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def parse_period(period: str) -> tuple[int, int]:
    """(year, month) from "YYYY-MM"; ValueError naming the period otherwise."""
    match = _PERIOD.match(period) if isinstance(period, str) else None
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise ValueError(f"period {period!r} is not YYYY-MM")
    return int(match.group(1)), int(match.group(2))


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def local_midnight(day: date, tz) -> datetime:
    """The UTC instant at which `day` begins in `tz`."""
    return datetime(day.year, day.month, day.day, tzinfo=zone(tz)).astimezone(UTC)


def next_local_midnight(moment: datetime, tz) -> datetime:
    """The first local midnight at or after `moment` (`moment` itself when it is one)."""
    local = moment.astimezone(zone(tz))
    day = local.date()
    start = local_midnight(day, tz)
    return start if start == moment else local_midnight(day + timedelta(days=1), tz)


def month_bounds(period: str, tz) -> tuple[datetime, datetime]:
    """(start, end) in UTC of the local calendar month "YYYY-MM" in `tz`."""
    year, month = parse_period(period)
    ny, nm = _next_month(year, month)
    return local_midnight(date(year, month, 1), tz), local_midnight(date(ny, nm, 1), tz)


def days_in_month(period: str) -> int:
    year, month = parse_period(period)
    ny, nm = _next_month(year, month)
    return (date(ny, nm, 1) - date(year, month, 1)).days


def period_of(moment: datetime, tz) -> str:
    """The local month "YYYY-MM" that contains `moment`."""
    local = moment.astimezone(zone(tz))
    return f"{local.year:04d}-{local.month:02d}"


def previous_period(period: str) -> str:
    year, month = parse_period(period)
    year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{year:04d}-{month:02d}"


def next_period(period: str) -> str:
    year, month = _next_month(*parse_period(period))
    return f"{year:04d}-{month:02d}"
