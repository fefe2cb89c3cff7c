"""Month reports, claims and month-to-date figures from the rollups the evaluator keeps, not from
every result.

The evaluator stores, per policy, its verified outage windows (with the rounds behind each, the
evidence), the runs of non-UP rounds (FAILED, DEGRADED, UNKNOWN) and how far it has judged
(`judged_until`). Inside the judged stretch a slot no run covers was UP, so the rounds a report
needs follow from a handful of rows, as spans of one verdict (collector.rules.report.RoundSpans,
counted per span rather than per slot); they go through the same pure core as the raw path
(collector.rules.report.build_report and verify_claim), which makes the two answers the same dict,
figure for figure, on the same data (tests/test_reports_from_rollups.py holds them equal).

What the rollups cover, per policy ("judged"):
  from   the policy's first evidence (judging starts there; before it no round has a verdict, as in
         the raw path), but no further back than CATCH_UP_SPAN before `judged_until`: a policy
         first judged on a database holding older results was caught up that far only.
  until  `judged_until`: the evaluator moves it only when everything before it has been judged.
A period the rollups do not cover (or whose windows were judged under another version of the
policy) is answered from raw results by the caller (collector.reporting); so is anything without
a database (the offline CLI path).

In a running month the slots between `judged_until` and `now` are "not yet judged": the core is
given no round for them, so it counts them as unknown (in the worst case as down), never as up;
what follows `now` is the future, treated exactly as in the raw path (neither downtime, nor
unknown, nor evidence). Where those slots already hold results, the raw path (which judges them
before their grace is over) may say more; everywhere else the two answers are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import store
from collector.db import Maintenance, OutageWindow, RoundRun
from collector.evaluator import CATCH_UP_SPAN
from collector.rules.maintenance import check_kinds
from collector.rules.model import Announcement, ComponentRound, Round, Verdict, Window
from collector.rules.periods import month_bounds
from collector.rules.policy import Policy
from collector.rules.report import RoundSpans, build_report, verify_claim
from collector.rules.rounds import slot_of

__all__ = ["Coverage", "coverage_of", "month_report", "month_reports", "claim", "spans_from_runs", "CLAIM_MARGIN"]

UTC = timezone.utc
_VERDICTS = {v.value: v for v in Verdict}
# The raw claim path judges the results within a day (plus the rule's minimum duration) of the
# claim; a window reaching past that is judged differently there, so such claims are left to it.
CLAIM_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Coverage:
    """The stretch [judged_from, judged_until) in which every round of a policy with evidence has
    been judged; `first_slot` is the slot of its first evidence (before it, no round at all)."""

    first_slot: datetime
    judged_from: datetime
    judged_until: datetime

    def covers(self, start: datetime, end: datetime) -> bool:
        """Every round with evidence in [start, end) was judged."""
        return self.judged_from <= max(start, self.first_slot) and end <= self.judged_until


async def coverage_of(session: AsyncSession, policies: Sequence[Policy]) -> dict[str, Coverage]:
    """The policies' coverage in two queries (their progress, their first evidence); a policy
    never judged, or without evidence, has none."""
    done = await store.judged_until(session, [p.name for p in policies])
    judged = [p for p in policies if p.name in done]
    firsts = await store.first_result_slots(session, [c for p in judged for c in p.components]) if judged else {}
    out: dict[str, Coverage] = {}
    for policy in judged:
        first = min((firsts[c] for c in policy.components if c in firsts), default=None)
        if first is None:
            continue
        first = slot_of(first, policy.interval)
        until = done[policy.name]
        out[policy.name] = Coverage(first, max(first, slot_of(until - CATCH_UP_SPAN, policy.interval)), until)
    return out


# --- the rows as the rules core sees them ------------------------------------------------------

def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _round_of(data: dict) -> Round:
    """A Round from its stored form (Round.to_dict, in a window's evidence)."""
    components = tuple(
        ComponentRound(name, _VERDICTS[c["verdict"]], tuple(c["failed"]), tuple(c["succeeded"]), tuple(c["missing"]),
                       tuple(c.get("degraded", ())))
        for name, c in data["components"].items())
    return Round(_instant(data["slot"]), _VERDICTS[data["verdict"]], components)


def window_of(row: OutageWindow) -> Window:
    """A stored window with the rounds of its evidence, as find_windows made it."""
    return Window(row.start, row.end, tuple(_round_of(r) for r in (row.evidence or {}).get("rounds", ())))


def spans_from_runs(policy: Policy, runs: Sequence[RoundRun], start: datetime, end: datetime) -> RoundSpans:
    """The rounds with a verdict (UP, DEGRADED, FAILED) of the slots in [start, end), from the
    runs, as spans of one verdict (the core counts their slots by arithmetic): a slot is what the
    run covering its start says, UP where none does. UNKNOWN slots are left out: the core counts
    a slot it was not given as unknown, exactly as an UNKNOWN round (build_report: "slots nobody
    gave us are UNKNOWN"). Rounds carry no per-agent evidence; the core reads that only from
    windows."""
    spans: list = []

    def add(lo: datetime, hi: datetime, verdict: Verdict) -> None:
        # RoundSpans takes the slots that start in [lo, hi)
        if hi > lo and verdict is not Verdict.UNKNOWN:
            spans.append((lo, hi, verdict))

    cursor = slot_of(start, policy.interval)
    for run in sorted(runs, key=lambda r: r.start):
        if run.end <= cursor:
            continue
        if run.start >= end:
            break
        add(cursor, min(run.start, end), Verdict.UP)
        add(max(cursor, run.start), min(run.end, end), _VERDICTS[run.verdict])
        cursor = max(cursor, run.end)
    if cursor < end:
        add(cursor, end, Verdict.UP)
    return RoundSpans(policy.interval, spans)


def rounds_from_runs(policy: Policy, runs: Sequence[RoundRun], start: datetime, end: datetime) -> list[Round]:
    """spans_from_runs one Round per slot (what the core was given before it took spans)."""
    return list(spans_from_runs(policy, runs, start, end))


def announcement_of(row: Maintenance) -> Announcement:
    """The rules core's view of a stored announcement."""
    return Announcement(kind=row.kind, announced=row.stated_announced, start=row.start, end=row.end,
                        note=row.note or "", recorded_at=row.recorded_at, recorded_by=row.recorded_by,
                        author=row.author or "", cancelled_at=row.cancelled_at, cancel_reason=row.cancel_reason or "",
                        id=row.id)


_announcement = announcement_of


def margin_of(policy: Policy) -> timedelta:
    # A run that crosses the range's edges is judged whole: look a day beyond each edge (runs
    # longer than that are extended step by step by the core's own lookback in evaluate_offline).
    return timedelta(days=1) + timedelta(seconds=policy.min_duration)


def _previous_period(period: str, back: int) -> str:
    year, month = (int(x) for x in period.split("-"))
    index = year * 12 + (month - 1) - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


async def maintenance_of(session: AsyncSession, names: Sequence[str]) -> dict[str, list[Announcement]]:
    """collector.reporting.load_maintenance(include_cancelled=True) for many policies at once."""
    out: dict[str, list[Announcement]] = {name: [] for name in names}
    for i in range(0, len(names), 2000):
        stmt = (select(Maintenance).where(Maintenance.policy.in_(list(names[i:i + 2000])))
                .order_by(Maintenance.policy, Maintenance.start, Maintenance.id))
        for row in (await session.scalars(stmt)).all():
            out[row.policy].append(_announcement(row))
    return out


# --- month reports -----------------------------------------------------------------------------

@dataclass
class _Rows:
    runs: list[RoundRun]
    windows: list[OutageWindow]


def _judged_end(coverage: Coverage, period_start: datetime, period_end: datetime, now: datetime) -> datetime | None:
    """Where the rounds the rollups give end for this period, or None when the rollups cannot
    answer: the period's end when it is judged to its end; `judged_until` in the running month
    (its slots up to `now` are not yet judged: the core counts them unknown, never up, and what
    follows `now` is the future, as in the raw path); a month over but not judged to its end,
    or a report asked as of a moment before `judged_until`, is left to the raw path."""
    if coverage.judged_until > now:
        return None
    if coverage.judged_until >= period_end:
        return period_end
    if now >= period_end:
        return None
    return max(period_start, coverage.judged_until)


def _report(policy: Policy, period: str, coverage: Coverage, rows: _Rows, maintenance: Sequence[Announcement],
            now: datetime, history) -> dict[str, Any] | None:
    start, end = month_bounds(period, policy.tz)
    judged_end = _judged_end(coverage, start, end, now)
    if judged_end is None or not coverage.covers(slot_of(start, policy.interval), judged_end):
        return None
    rule = policy.content_hash()
    if any(w.rule_hash != rule for w in rows.windows):
        return None  # judged under another version of the policy: the raw path judges it afresh
    rounds = spans_from_runs(policy, rows.runs, max(start, coverage.first_slot), judged_end)
    windows = [window_of(w) for w in rows.windows]
    return build_report(policy, period, rounds, windows, maintenance, now=now, history=history)


def _needs_history(policy: Policy) -> bool:
    # only the termination right reads the months before (NexGen Service Level Addendum §4)
    return bool(getattr(policy.credit, "termination_after_months", None))


async def month_reports(session: AsyncSession, policies: Sequence[Policy], period_of: dict[str, str], *,
                        now: datetime, extra_maintenance: Sequence[Announcement] = ()) -> dict[str, dict | None]:
    """Each policy's report of its period (`period_of[name]`) from the rollups, in a few queries
    for all of them; None for a policy the rollups do not cover (the caller asks the raw path).

    1. Coverage of every policy (progress and first evidence).
    2. Runs and windows overlapping the earliest to the latest period, and the announcements.
    3. Per policy, the core's report (build_report) on the rounds and windows they give.
    Policies with a termination right get the months before as history, as the raw path does."""
    if not policies:
        return {}
    coverage = await coverage_of(session, policies)
    names = [p.name for p in policies if p.name in coverage]
    out: dict[str, dict | None] = {p.name: None for p in policies}
    if not names:
        return out
    bounds = {p.name: month_bounds(period_of[p.name], p.tz) for p in policies if p.name in coverage}
    lo, hi = min(b[0] for b in bounds.values()), max(b[1] for b in bounds.values())
    runs = await store.runs_between(session, names, lo, hi)
    windows = await store.windows_between(session, names, lo, hi)
    maintenance = await maintenance_of(session, names)
    for policy in policies:
        cov = coverage.get(policy.name)
        if cov is None:
            continue
        start, end = bounds[policy.name]
        announcements = [*maintenance[policy.name], *extra_maintenance]
        check_kinds(policy, announcements)
        rows = _Rows([r for r in runs.get(policy.name, ()) if r.start < end and r.end > start],
                     [w for w in windows.get(policy.name, ()) if w.start < end and (w.end is None or w.end > start)])
        history = None
        if _needs_history(policy):
            history = await _history(session, policy, period_of[policy.name], cov, announcements, now)
            if history is None:
                continue
        out[policy.name] = _report(policy, period_of[policy.name], cov, rows, announcements, now, history)
    return out


async def month_report(session: AsyncSession, policy: Policy, period: str, *, now: datetime,
                       extra_maintenance: Sequence[Announcement] = ()) -> dict | None:
    """One policy's month report from the rollups, or None where they do not cover it."""
    return (await month_reports(session, [policy], {policy.name: period}, now=now,
                                extra_maintenance=extra_maintenance))[policy.name]


async def _history(session: AsyncSession, policy: Policy, period: str, coverage: Coverage,
                   maintenance: Sequence[Announcement], now: datetime) -> list | None:
    """The two months before `period`, as collector.reporting._report_from_db gives them: a
    month with no evidence within the raw path's margin is None; None as a whole when one of
    them is not covered by the rollups (the raw path then answers the whole report)."""
    history = []
    for back in (1, 2):
        prev = _previous_period(period, back)
        p_start, p_end = month_bounds(prev, policy.tz)
        margin = margin_of(policy)
        if not await store.has_evidence(session, policy.components, p_start - margin, p_end + margin):
            history.append((prev, None))
            continue
        rows = _Rows(*(await _rows(session, policy, p_start, p_end)))
        report = _report(policy, prev, coverage, rows, maintenance, now, None)
        if report is None:
            return None
        history.append((prev, report))
    return history


async def _rows(session: AsyncSession, policy: Policy, start: datetime, end: datetime):
    runs = (await store.runs_between(session, [policy.name], start, end)).get(policy.name, [])
    windows = (await store.windows_between(session, [policy.name], start, end)).get(policy.name, [])
    return runs, windows


# --- claims ------------------------------------------------------------------------------------

async def claim(session: AsyncSession, policy: Policy, claim_start: datetime, claim_end: datetime, *,
                extra_maintenance: Sequence[Announcement] = ()) -> dict | None:
    """A claimed outage checked against the stored windows and the rounds the runs give over
    the claim (verify_claim), or None where the rollups cannot answer it as the raw path does:
    the claim is not judged to its end, or a window it touches is still open or reaches further
    than the raw path looks (CLAIM_MARGIN plus the minimum duration beyond either edge)."""
    if claim_end <= claim_start:
        return None  # the raw path says why (verify_claim's own message)
    coverage = (await coverage_of(session, [policy])).get(policy.name)
    if coverage is None or not coverage.covers(slot_of(claim_start, policy.interval), claim_end):
        return None
    margin = margin_of_claim(policy)
    runs, rows = await _rows(session, policy, claim_start, claim_end)
    if any(w.end is None or w.start < claim_start - margin or w.end > claim_end + margin
           or w.rule_hash != policy.content_hash() for w in rows):
        return None
    maintenance = [*(await maintenance_of(session, [policy.name]))[policy.name], *extra_maintenance]
    check_kinds(policy, maintenance)
    rounds = spans_from_runs(policy, runs, max(claim_start, coverage.first_slot), claim_end)
    return verify_claim(policy, claim_start, claim_end, [window_of(w) for w in rows], maintenance, rounds=rounds)


def margin_of_claim(policy: Policy) -> timedelta:
    return CLAIM_MARGIN + timedelta(seconds=policy.min_duration)
