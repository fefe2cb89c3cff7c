"""Credit rules, one small function each; a preset picks one by `credit.type` (issue 3,
"Credits and claims"). All arithmetic is exact (fractions); callers turn results into JSON.
"""
from __future__ import annotations

import math
from datetime import date, timedelta
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

from .intervals import Interval
from .periods import local_midnight, previous_period
from .policy import Band

__all__ = ["exact", "tiered_percent", "half_day_per_started_hour", "outage_days", "day_per_outage_day",
           "per_outage_increment", "capped_total", "pro_rata", "termination_right"]


def exact(value: float | int | str | Fraction) -> Fraction:
    """A decimal figure from a policy (99.95) as the exact fraction it stands for."""
    if isinstance(value, Fraction):
        return value
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def tiered_percent(availability: Fraction, guaranteed: float, bands: Sequence[Band]) -> tuple[Fraction, Band | None]:
    """Numezis §7: no credit at or above the guaranteed level; below it, the first band whose
    floor the availability reaches (10 % at >= 95.0, 25 % at >= 90.0, 50 % below)."""
    if availability >= exact(guaranteed):
        return Fraction(0), None
    for band in bands:
        if band.at_least is None or availability >= exact(band.at_least):
            return exact(band.percent), band
    return Fraction(0), None


def half_day_per_started_hour(downtime_minutes: Fraction, days_in_month: int,
                              days_per_started_hour: float = 0.5) -> dict:
    """Haivision VCMS §5: "one-half day of Fees for each hour of Downtime or fraction thereof",
    "a maximum of one month of credit": days = 0.5 × ceil(N / 60), at most the month's days."""
    started_hours = math.ceil(downtime_minutes / 60)
    days = exact(days_per_started_hour) * started_hours
    capped = days > days_in_month
    days = min(days, Fraction(days_in_month))
    return {"started_hours": started_hours, "days": days, "capped": capped,
            "percent": days / days_in_month * 100}


def outage_days(pieces: Iterable[Interval], tz) -> list[date]:
    """The local calendar dates on which any of the pieces has at least one instant."""
    days: set[date] = set()
    for start, end in pieces:
        if end <= start:
            continue
        day = start.astimezone(tz).date()
        while local_midnight(day, tz) < end:
            days.add(day)
            day += timedelta(days=1)
    return sorted(days)


def day_per_outage_day(pieces: Iterable[Interval], tz, max_days: int) -> dict:
    """Haivision Streaming §7-8: a day's fees "for the day in which the failure occurs", "not to
    exceed 30 days of fees": the distinct local days with non-excluded outage time, capped."""
    dates = outage_days(pieces, tz)
    return {"dates": dates, "days": min(len(dates), max_days), "capped": len(dates) > max_days}


def per_outage_increment(qualifying_minutes: Fraction, increment_minutes: Fraction,
                         percent_per_increment: float) -> Fraction:
    """Nexcess: 5 % for each complete 15 minutes of one outage; under 15 minutes earns nothing
    (outages are never combined, so this is applied to each outage on its own)."""
    return exact(percent_per_increment) * math.floor(qualifying_minutes / increment_minutes)


def capped_total(percents: Iterable[Fraction], max_percent: float) -> tuple[Fraction, bool]:
    total = sum(percents, Fraction(0))
    cap = exact(max_percent)
    return (min(total, cap), total > cap)


def pro_rata(downtime_minutes: Fraction, total_minutes: Fraction, max_percent: float) -> tuple[Fraction, bool]:
    """NexGen §3(c)-(d): rebate N / T of the cycle's fees, at most the fees paid."""
    if total_minutes <= 0:
        return Fraction(0), False
    return capped_total([downtime_minutes / total_minutes * 100], max_percent)


def _month_below(value, target: Fraction) -> bool | None:
    """Whether one month was below target, from what `history` holds for it: None (unknown); a
    number (that month's availability, taken as exact); a (best, worst) pair of availabilities;
    or a month's report (a mapping with `met`, or `availability_percent` and
    `availability_worst_percent`). A month whose best and worst case straddle the target is
    undetermined (None), never taken as met."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if "met" in value:
            return None if value["met"] is None else not value["met"]
        value = (value.get("availability_percent"), value.get("availability_worst_percent"))
    if isinstance(value, (tuple, list)):
        best, worst = value
        if best is None:
            return None
        if exact(best) < target:
            return True
        return False if worst is not None and exact(worst) >= target else None
    return exact(value) < target


def termination_right(period: str, below_target: bool | None, history, months: int,
                      target: float, *, undetermined_note: str | None = None) -> tuple[bool | None, str]:
    """NexGen Service Level Addendum §4: true when this month and the months before it (three in
    all) were below target ("if we do not achieve the minimum uptime requirement for three
    consecutive months").

    `history` gives earlier months as (period, value) pairs or a mapping; see _month_below for the
    values. False as soon as one of the months met the target; otherwise None when one of them is
    unknown or undetermined (a month whose verdict is undetermined is not taken as met, nor as
    missed); `undetermined_note` says why this month is (default: its availability is unknown).
    """
    known = dict(history or {})
    goal = exact(target)
    if below_target is False:
        return False, "this month met the target"
    wanted, prior = [], period
    for _ in range(months - 1):
        prior = previous_period(prior)
        wanted.append(prior)
    unknown, undetermined = [], []
    for month in wanted:
        value = known.get(month)
        below = _month_below(value, goal)
        if below is None:
            (unknown if value is None else undetermined).append(month)
        elif not below:
            return False, f"{month} met the target"
    if below_target is None:
        return None, undetermined_note or "this month's availability is unknown"
    if unknown:
        return None, f"availability unknown for {', '.join(unknown)} (pass it as history)"
    if undetermined:
        return None, f"undetermined: {', '.join(undetermined)} may or may not have been below {target} %"
    return True, f"{period} and the {months - 1} months before it were all below {target} %"
