"""Claim deadlines (issue 3, "Credits and claims").

A deadline is given twice: `claim_deadline`, the last local calendar date on which a claim may be
made, and `claim_deadline_at`, the exclusive UTC instant (local midnight after that date).
Days are counted from the first local day after the end: a month ends at local midnight of the
next 1st, so "5 calendar days after October" runs 1 to 5 November; an outage that ends at 14:00 on
the 10th gives "7 days after" as the 17th. Business days are Monday to Friday in the policy's time
zone; the contracts name no holiday calendar, so public holidays are not skipped.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from .model import iso
from .periods import local_midnight, next_local_midnight
from .policy import Policy

__all__ = ["calendar_days_after", "business_days_after", "claim_deadline"]


def _first_day_after(end: datetime, tz) -> date:
    return next_local_midnight(end, tz).astimezone(tz).date()


def calendar_days_after(end: datetime, days: int, tz) -> date:
    """The last local date within `days` calendar days after `end`."""
    return _first_day_after(end, tz) + timedelta(days=days - 1)


def business_days_after(end: datetime, days: int, tz) -> date:
    """The local date of the `days`-th business day (Mon–Fri) after `end`."""
    day = _first_day_after(end, tz)
    counted = 0
    while True:
        if day.weekday() < 5:
            counted += 1
            if counted >= days:
                return day
        day += timedelta(days=1)


def _result(last_day: date, tz, rule: str, note: str = "") -> dict:
    out = {"claim_deadline": last_day.isoformat(),
           "claim_deadline_at": iso(local_midnight(last_day + timedelta(days=1), tz)),
           "claim_rule": rule}
    if note:
        out["claim_note"] = note
    return out


def claim_deadline(policy: Policy, *, period_end: datetime | None = None,
                   outage_end: datetime | None = None) -> dict:
    """{claim_deadline, claim_deadline_at, claim_rule[, claim_note]} under the policy's claim rule.

    Period rules need `period_end` (the exclusive end of the month); `after_outage_end` needs
    `outage_end` (None while the outage is still open: no deadline yet).
    """
    rule, tz = policy.claim, policy.tz
    if rule.type == "none":
        out = {"claim_deadline": None, "claim_deadline_at": None, "claim_rule": "none"}
        if rule.note:
            out["claim_note"] = rule.note
        return out
    if rule.type == "after_outage_end":
        described = f"{rule.days} calendar days after the outage ends"
        if outage_end is None:
            return {"claim_deadline": None, "claim_deadline_at": None, "claim_rule": described,
                    "claim_note": "the outage has not ended yet; the deadline runs from its end"}
        return _result(calendar_days_after(outage_end, rule.days, tz), tz, described, rule.note)
    if period_end is None:
        raise ValueError("a period claim rule needs the period's end")
    if rule.type == "after_period_calendar_days":
        return _result(calendar_days_after(period_end, rule.days, tz), tz,
                       f"{rule.days} calendar days after the period ends", rule.note)
    return _result(business_days_after(period_end, rule.days, tz), tz,
                   f"{rule.days} business days (Mon–Fri, {policy.timezone}) after the period ends", rule.note)
