"""Maintenance announcements judged against the kinds a policy accepts.

Rules, by the names the report uses:
  notice      judged from when the collector recorded the announcement (`recorded_at`), or from
              the operator's stated earlier time where the policy says `trust_stated_notice`. One
              of (the report's `notice.rule` says which applied):
                min_notice          recorded at least min_notice before the start (only when the
                                    maintenance is longer than `notice_required_over`, if set);
                after_start_within  recorded no later than `notice_after_start_within` after the
                                    start (a contract that allows notice after the fact);
                after_start_any     `notice_after_start_within: any`: recorded at any time;
                by_start            otherwise: recorded no later than the start (maintenance that
                                    needs no minimum notice is still announced before it happens).
              Broken, the whole announcement excludes nothing.
  window      any part outside the kind's local-time window (policy time zone; a window may cross
              midnight; `days` are the weekdays on which it opens): the whole excludes nothing.
  continuous  longer than max_continuous: with `over_max_continuous: up_to_max` the part after
              start + max_continuous excludes nothing; with `nothing` none of it excludes anything.
  budget      a kind's announcements use its monthly budget in start order, per local calendar
              month (an announcement across a month end uses each month's budget for its part);
              the part beyond the budget excludes nothing.
  cancelled   a cancelled announcement excludes nothing and uses no budget.
Only time that is actually allowed uses the budget: an announcement that broke its notice or
window rule, or the part cut off by the continuous rule, was not maintenance under the contract.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from fractions import Fraction
from typing import Sequence

from .durations import format_duration
from .intervals import Interval, merge, subtract
from .model import Announcement, iso, minutes_between, number
from .periods import local_midnight, period_of
from .policy import WEEKDAYS, LocalWindow, MaintenanceKind, Policy, PolicyError

__all__ = ["Judgement", "judge_maintenance", "allowed_intervals", "check_kinds", "STATED_CLOCK_SKEW"]

# A stated announcement time may be this much later than the collector recorded it (the
# operator's clock running ahead): later than that, it cannot be when notice was given.
STATED_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Judgement:
    announcement: Announcement
    compliant: bool
    broken_rules: tuple[dict, ...]          # {"rule": "notice"|"window"|"continuous"|"budget", "detail": str}
    allowed: tuple[Interval, ...]           # UTC intervals this announcement may exclude
    notice: dict | None = None              # how the notice rule was judged (see _judge_notice)

    @property
    def excluded(self) -> tuple[Interval, ...]:
        """The intervals this announcement may exclude (the same as `allowed`)."""
        return self.allowed

    @property
    def allowed_minutes(self) -> Fraction:
        return sum((minutes_between(s, e) for s, e in self.allowed), Fraction(0))

    def to_dict(self) -> dict:
        out = self.announcement.to_dict()
        out.update(compliant=self.compliant, broken_rules=[dict(r) for r in self.broken_rules],
                   allowed=[{"start": iso(s), "end": iso(e)} for s, e in self.allowed],
                   allowed_minutes=number(self.allowed_minutes))
        if self.notice is not None:
            out["notice"] = dict(self.notice)
        return out


def check_kinds(policy: Policy, announcements: Sequence[Announcement]) -> None:
    """PolicyError for a kind the policy does not accept, naming the kinds it does."""
    for ann in announcements:
        if ann.kind not in policy.maintenance:
            accepted = ", ".join(policy.maintenance) or "none"
            raise PolicyError(f"maintenance kind {ann.kind!r} is not accepted by policy '{policy.name}' "
                              f"(accepted kinds: {accepted})")


def _local(moment: datetime, tz) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _window_intervals(window: LocalWindow, start: datetime, end: datetime, tz) -> list[Interval]:
    """The kind's allowed local windows near [start, end), as merged UTC intervals."""
    open_min, close_min = window.minutes_of_day()
    crosses_midnight = close_min <= open_min
    first = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    found = []
    day = first
    while day <= last:
        if window.days is None or WEEKDAYS[day.weekday()] in window.days:
            close_day = day + timedelta(days=1) if crosses_midnight else day
            found.append((_at(day, open_min, tz), _at(close_day, close_min, tz)))
        day += timedelta(days=1)
    return merge(found)


def _at(day: date, minute_of_day: int, tz) -> datetime:
    return datetime(day.year, day.month, day.day, minute_of_day // 60, minute_of_day % 60,
                    tzinfo=tz).astimezone(timezone.utc)


def _describe_window(window: LocalWindow, tz) -> str:
    days = f" on {', '.join(window.days)}" if window.days else ""
    return f"{window.start}–{window.end}{days} ({tz.key if hasattr(tz, 'key') else tz})"


def _split_by_month(interval: Interval, tz) -> list[tuple[str, Interval]]:
    """Pieces of `interval` per local calendar month."""
    pieces, start, end = [], interval[0], interval[1]
    while start < end:
        local = start.astimezone(tz)
        ny, nm = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        boundary = local_midnight(date(ny, nm, 1), tz)
        piece_end = min(end, boundary)
        pieces.append((period_of(start, tz), (start, piece_end)))
        start = piece_end
    return pieces


def _judge_notice(policy: Policy, ann: Announcement, kind: MaintenanceKind) -> dict:
    """How the notice rule applies to `ann`: {rule, met, judged_from, at, start,
    lead_seconds (at before start; negative: after it), detail}.

    1. The time judged: when it was recorded; the stated time instead where the policy trusts it
       and it is earlier.
    2. The rule: min_notice where notice is required, else notice_after_start_within where the
       kind allows notice after the fact, else by_start."""
    at, judged_from = ann.recorded, "recorded_at"
    stated = ann.announced
    if policy.trust_stated_notice and stated is not None and stated < at:
        at, judged_from = stated, "stated_announced"
    length = (ann.end - ann.start).total_seconds()
    lead = (ann.start - at).total_seconds()
    if judged_from == "stated_announced":
        what = "announced (the stated time, trusted by this policy)"
    else:
        what = "recorded" if ann.recorded_at is not None else "announced"
    given = (f"{format_duration(lead)} before its start" if lead > 0 else
             f"{format_duration(-lead)} after its start" if lead < 0 else "at its start")
    needs_notice = kind.min_notice > 0 and (kind.notice_required_over is None or length > kind.notice_required_over)
    within = kind.notice_after_start_within
    if needs_notice:
        rule, met = "min_notice", lead >= kind.min_notice
        over = (f" (required because it lasts {format_duration(length)}, more than "
                f"{format_duration(kind.notice_required_over)})" if kind.notice_required_over is not None else "")
        rule_text = f"{ann.kind} maintenance needs at least {format_duration(kind.min_notice)} notice{over}"
    elif within == "any":
        rule, met = "after_start_any", True
        rule_text = f"{ann.kind} maintenance may be notified at any time, also after it starts"
    elif within is not None:
        rule, met = "after_start_within", -lead <= within
        rule_text = (f"{ann.kind} maintenance may be notified up to {format_duration(within)} after it starts")
    else:
        rule, met = "by_start", lead >= 0
        why = (f"needs no minimum notice when it lasts at most {format_duration(kind.notice_required_over)}"
               if kind.min_notice > 0 else "needs no minimum notice")
        rule_text = f"{ann.kind} maintenance {why}, but must be recorded by its start"
    detail = f"{what} {given}; {rule_text}"
    if not met and judged_from == "recorded_at" and stated is not None and stated < ann.recorded:
        detail += (f" (the stated announcement time {iso(stated)} does not count: the policy does not "
                   "trust stated notice, trust_stated_notice: false)")
    return {"rule": rule, "met": met, "judged_from": judged_from, "at": iso(at), "start": iso(ann.start),
            "lead_seconds": number(lead), "detail": detail}


def judge_maintenance(policy: Policy, announcements: Sequence[Announcement]) -> list[Judgement]:
    """Judge each announcement; the result is in the order given.

    1. Unknown kinds are refused (PolicyError).
    2. notice and window: a broken rule means the announcement excludes nothing.
    3. continuous: the allowed time ends at start + max_continuous.
    4. budget: per kind and local month, in start order, allowed time is cut at the budget.
    """
    check_kinds(policy, announcements)
    tz = policy.tz
    broken: list[list[dict]] = [[] for _ in announcements]
    candidate: list[Interval | None] = [None] * len(announcements)
    notices: list[dict] = []
    for i, ann in enumerate(announcements):
        if ann.end < ann.start:
            raise ValueError(f"maintenance {ann.kind} starting {iso(ann.start)} ends before it starts")
        kind: MaintenanceKind = policy.maintenance[ann.kind]
        length = (ann.end - ann.start).total_seconds()
        excluded_whole = False
        if ann.cancelled_at is not None:
            reason = f" ({ann.cancel_reason})" if ann.cancel_reason else ""
            broken[i].append({"rule": "cancelled", "detail": f"cancelled at {iso(ann.cancelled_at)}{reason}: "
                                                             "a cancelled announcement excludes nothing"})
            excluded_whole = True
        notice = _judge_notice(policy, ann, kind)
        notices.append(notice)
        if not notice["met"]:
            broken[i].append({"rule": "notice", "detail": notice["detail"]})
            excluded_whole = True
        if kind.window is not None and ann.end > ann.start:
            outside = subtract((ann.start, ann.end), _window_intervals(kind.window, ann.start, ann.end, tz))
            if outside:
                first = outside[0]
                broken[i].append({"rule": "window", "detail": (
                    f"{_local(first[0], tz)} to {_local(first[1], tz)} is outside the {ann.kind} window "
                    f"{_describe_window(kind.window, tz)}")})
                excluded_whole = True
        allowed_end = ann.end
        if kind.max_continuous is not None and length > kind.max_continuous:
            allowed_end = ann.start + timedelta(seconds=kind.max_continuous)
            if kind.over_max_continuous == "nothing":
                consequence = "none of it excludes anything (over_max_continuous: nothing)"
                excluded_whole = True
            else:
                consequence = f"the time after {_local(allowed_end, tz)} excludes nothing (over_max_continuous: up_to_max)"
            broken[i].append({"rule": "continuous", "detail": (
                f"lasts {format_duration(length)}, longer than the {format_duration(kind.max_continuous)} "
                f"{ann.kind} maintenance may last; {consequence}")})
        if not excluded_whole and allowed_end > ann.start:
            candidate[i] = (ann.start, allowed_end)

    allowed: list[list[Interval]] = [[] for _ in announcements]
    order = sorted(range(len(announcements)),
                   key=lambda i: (announcements[i].start, announcements[i].recorded, i))
    used: dict[tuple[str, str], float] = {}   # (kind, "YYYY-MM") -> seconds of budget used
    for i in order:
        if candidate[i] is None:
            continue
        ann = announcements[i]
        budget = policy.maintenance[ann.kind].monthly_budget
        if budget is None:
            allowed[i].append(candidate[i])
            continue
        cut = []
        for month, (start, end) in _split_by_month(candidate[i], tz):
            spent = used.get((ann.kind, month), 0.0)
            left = max(0.0, budget - spent)
            length = (end - start).total_seconds()
            take = min(left, length)
            used[(ann.kind, month)] = spent + take
            if take > 0:
                allowed[i].append((start, start + timedelta(seconds=take)))
            if take < length:
                cut.append((month, spent, start + timedelta(seconds=take), length - take))
        if cut:
            details = "; ".join(
                f"{format_duration(budget)} {ann.kind} budget for {month} "
                f"({format_duration(spent)} already used): the last {format_duration(over)} from "
                f"{_local(from_, tz)} excludes nothing" for month, spent, from_, over in cut)
            broken[i].append({"rule": "budget", "detail": details})

    return [Judgement(ann, not broken[i], tuple(broken[i]), tuple(merge(allowed[i])), notices[i])
            for i, ann in enumerate(announcements)]


def allowed_intervals(judgements: Sequence[Judgement]) -> list[Interval]:
    """Everything the announcements may exclude, merged."""
    return merge(iv for j in judgements for iv in j.allowed)

