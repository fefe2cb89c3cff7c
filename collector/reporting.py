"""SLA reports and claim checks over the collector's database, through the same pure core that
offline reports use (collector.rules), so a figure is the same wherever it is computed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import rollup_reports, store
from collector.rollup_reports import _previous_period, announcement_of, margin_of
from collector.db import Maintenance
from collector.offload import run_off_loop
from collector.rules.model import Announcement
from collector.rules.offline import evaluate_offline
from collector.rules.periods import month_bounds, next_period, parse_period, previous_period
from collector.rules.policy import Policy
from collector.rules.recurrence import (CancelledOccurrence, MaintenanceSeries, Recurrence, expand_maintenance,
                                        judged_range)
from collector.rules.report import verify_claim
from collector.rules.rounds import evaluate_rounds, slot_of
from collector.rules.windows import find_windows


def series_of(row, cancellations=()) -> MaintenanceSeries:
    """The rules core's view of a stored series (collector.db.MaintenanceSeries) and its
    cancelled occurrences."""
    recurrence = Recurrence(row.rrule, row.start, timedelta(seconds=row.duration_seconds), row.timezone)
    return MaintenanceSeries(
        kind=row.kind, recurrence=recurrence, recorded_at=row.recorded_at, announced=row.stated_announced,
        note=row.note or "", recorded_by=row.recorded_by, author=row.author or "", cancelled_at=row.cancelled_at,
        cancel_reason=row.cancel_reason or "", id=row.id,
        cancelled_occurrences=tuple(CancelledOccurrence(c.start, c.cancelled_at, c.cancel_reason or "", c.cancelled_by)
                                    for c in cancellations))


# Without a range, the occurrences of series this close to now (what maintenance notifications,
# which look a day back, need).
AROUND_NOW = timedelta(days=2)


async def load_maintenance(session: AsyncSession, policy: str, *, include_cancelled: bool = False,
                           start: datetime | None = None, end: datetime | None = None) -> list[Announcement]:
    """The policy's announcements in start order; cancelled ones only with `include_cancelled`
    (reports list them, excluding nothing; notifications leave them out).

    Recurring maintenance is expanded here, the one place reports, claims, the live month-to-date
    report and notifications load it from: each occurrence overlapping [start, end) (default: now
    +- AROUND_NOW) becomes an announcement recorded when its series was. Give whole local months
    (rules.recurrence.judged_range) where monthly budgets are judged."""
    stmt = select(Maintenance).where(Maintenance.policy == policy).order_by(Maintenance.start, Maintenance.id)
    if not include_cancelled:
        stmt = stmt.where(Maintenance.cancelled_at.is_(None))
    announcements = [announcement_of(r) for r in (await session.scalars(stmt)).all()]
    occurrences = await load_series_occurrences(session, policy, start, end, include_cancelled=include_cancelled)
    if not occurrences:
        return announcements
    return sorted([*announcements, *occurrences], key=lambda a: (a.start, a.recorded))


async def load_series_occurrences(session: AsyncSession, policy: str, start: datetime | None, end: datetime | None,
                                  *, include_cancelled: bool = True) -> list[Announcement]:
    """The occurrences of the policy's recurring series overlapping [start, end) (default: now
    +- AROUND_NOW), each an announcement recorded when its series was (load_maintenance)."""
    series = await store.list_maintenance_series(session, policy)
    if not series:
        return []
    if start is None or end is None:
        now = datetime.now(timezone.utc)
        start, end = start or now - AROUND_NOW, end or now + AROUND_NOW
    return expand_maintenance([series_of(row, cancelled) for row, cancelled in series], start, end,
                              include_cancelled=include_cancelled)


async def _observations_around(session: AsyncSession, policy: Policy, start: datetime, end: datetime):
    margin = margin_of(policy)
    return await store.load_observations(session, policy.components, start - margin, end + margin)


async def report_from_db(
    session: AsyncSession,
    policy: Policy,
    period: str,
    *,
    extra_maintenance: Sequence[Announcement] = (),
    expected_by_component: dict[str, list[str]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    # In a worker process (collector.offload): loading and judging a month's rows would otherwise
    # hold the event loop, and every agent's ingest behind it, for seconds.
    now = now or datetime.now(timezone.utc)
    return await run_off_loop(session, _report_from_db, policy, period, list(extra_maintenance),
                              expected_by_component, now)


async def _report_from_db(session: AsyncSession, policy: Policy, period: str, extra_maintenance: Sequence[Announcement],
                          expected_by_component: dict[str, list[str]] | None, now: datetime) -> dict[str, Any]:
    # from the evaluator's rollups where they cover the month (the same dict, from a few rows);
    # they read one-off announcements themselves: the series' occurrences of the month and the two
    # before it (the history) come with the extra ones, as load_maintenance expands them
    judged = month_bounds(_previous_period(period, 2), policy.timezone)[0], month_bounds(period, policy.timezone)[1]
    recurring = [*expand_maintenance(extra_maintenance, *judged),
                 *await load_series_occurrences(session, policy.name, *judged)]
    report = await rollup_reports.month_report(session, policy, period, now=now, extra_maintenance=recurring)
    if report is not None:
        return report
    return await _raw_report_from_db(session, policy, period, extra_maintenance, expected_by_component, now)


async def _raw_report_from_db(session: AsyncSession, policy: Policy, period: str,
                              extra_maintenance: Sequence[Announcement],
                              expected_by_component: dict[str, list[str]] | None, now: datetime) -> dict[str, Any]:
    """The month judged afresh from the raw results (and round summaries)."""
    start, end = month_bounds(period, policy.timezone)
    observations = await _observations_around(session, policy, start, end)
    # the month and the two before it (the history below), each whole for its monthly budgets
    maintenance = [*await load_maintenance(session, policy.name, include_cancelled=True,
                                           start=month_bounds(_previous_period(period, 2), policy.timezone)[0],
                                           end=end),
                   *extra_maintenance]
    history = []
    for back in (1, 2):
        prev = _previous_period(period, back)
        p_start, p_end = month_bounds(prev, policy.timezone)
        prev_obs = await _observations_around(session, policy, p_start, p_end)
        if prev_obs:
            prev_report = evaluate_offline(policy, prev_obs, prev, maintenance, now=now,
                                           expected_by_component=expected_by_component)
            # the whole report: an undetermined month must not count as met (best and worst case)
            history.append((prev, prev_report))
        else:
            history.append((prev, None))
    return evaluate_offline(policy, observations, period, maintenance, now=now, history=history,
                            expected_by_component=expected_by_component)


async def claim_from_db(
    session: AsyncSession,
    policy: Policy,
    claim_start: datetime,
    claim_end: datetime,
    *,
    extra_maintenance: Sequence[Announcement] = (),
    expected_by_component: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    # In a worker process, as a report (collector.offload).
    return await run_off_loop(session, _claim_from_db, policy, claim_start, claim_end, list(extra_maintenance),
                              expected_by_component)


async def _claim_from_db(session: AsyncSession, policy: Policy, claim_start: datetime, claim_end: datetime,
                         extra_maintenance: Sequence[Announcement],
                         expected_by_component: dict[str, list[str]] | None) -> dict[str, Any]:
    # series' occurrences in the claim's whole local months come with the extra ones (_report_from_db)
    months = judged_range(policy.tz, claim_start, claim_end)
    recurring = [*expand_maintenance(extra_maintenance, *months),
                 *await load_series_occurrences(session, policy.name, *months)]
    claim = await rollup_reports.claim(session, policy, claim_start, claim_end, extra_maintenance=recurring)
    if claim is not None:
        return claim
    return await _raw_claim_from_db(session, policy, claim_start, claim_end, extra_maintenance, expected_by_component)


async def _raw_claim_from_db(session: AsyncSession, policy: Policy, claim_start: datetime, claim_end: datetime,
                             extra_maintenance: Sequence[Announcement],
                             expected_by_component: dict[str, list[str]] | None) -> dict[str, Any]:
    observations = await _observations_around(session, policy, claim_start, claim_end)
    # whole local months around the claim: a kind's monthly budget is used in start order
    months = judged_range(policy.tz, claim_start, claim_end)
    maintenance = [*await load_maintenance(session, policy.name, include_cancelled=True, start=months[0], end=months[1]),
                   *extra_maintenance]
    return claim_from_observations(policy, observations, claim_start, claim_end, maintenance,
                                   expected_by_component=expected_by_component)


def claim_from_observations(policy: Policy, observations, claim_start, claim_end, maintenance, *,
                            expected_by_component=None) -> dict[str, Any]:
    # series from an offline file: their occurrences in the claim's whole local months
    maintenance = expand_maintenance(maintenance, *judged_range(policy.tz, claim_start, claim_end))
    if observations:
        first = min(o.ts for o in observations)
        last = max(o.ts for o in observations)
        start = slot_of(first, policy.interval)
        end = slot_of(last, policy.interval) + timedelta(seconds=policy.interval)
        rounds = evaluate_rounds(policy, observations, start, end, expected_by_component=expected_by_component)
        windows = find_windows(policy, rounds)
    else:
        rounds, windows = [], []
    # with the rounds, the claim says which of its minutes are verified, refuted or without evidence
    return verify_claim(policy, claim_start, claim_end, windows, maintenance, rounds=rounds)


# --- a range of months -------------------------------------------------------------------------

# A range longer than this is more likely a typo (2026-01..2062-01) than a wish.
MAX_RANGE_MONTHS = 120


def parse_period_range(text: str) -> list[str]:
    """The months of "YYYY-MM..YYYY-MM" (both included), or of one "YYYY-MM"; ValueError saying
    what is wrong (malformed, end before start, too long)."""
    if not isinstance(text, str) or not text:
        raise ValueError("give a month YYYY-MM or a range YYYY-MM..YYYY-MM")
    if ".." not in text:
        parse_period(text)
        return [text]
    first, _, last = text.partition("..")
    if not first or not last or ".." in last:
        raise ValueError(f"{text!r} is not a range YYYY-MM..YYYY-MM")
    a, b = parse_period(first), parse_period(last)
    if b < a:
        raise ValueError(f"{text!r}: the range ends ({last}) before it starts ({first})")
    count = (b[0] - a[0]) * 12 + b[1] - a[1] + 1
    if count > MAX_RANGE_MONTHS:
        raise ValueError(f"{text!r} spans {count} months; at most {MAX_RANGE_MONTHS}")
    months, month = [first], first
    while month != last:
        month = next_period(month)
        months.append(month)
    return months


def _months_before(policy: Policy, first: str) -> list[str]:
    """The months before the range whose verdicts the termination right of its first months
    needs (NexGen §4: "three consecutive months"), oldest first; none for other contracts."""
    wanted = (getattr(policy.credit, "termination_after_months", None) or 1) - 1
    out, month = [], first
    for _ in range(wanted):
        month = previous_period(month)
        out.insert(0, month)
    return out


def _evidence_in(policy: Policy, observations, period: str) -> bool:
    start, end = month_bounds(period, policy.tz)
    return any(start <= o.ts < end for o in observations)


def reports_over_range(policy: Policy, observations, periods: Sequence[str], maintenance: Sequence[Announcement] = (),
                       *, now: datetime | None = None, expected_by_component: dict[str, list[str]] | None = None,
                       fee: float | None = None) -> dict[str, Any]:
    """Offline: every month's report, each judged with the months before it as its history (the
    same history the live path builds from the database, _report_from_db), and the verdict of
    the termination right over the range (termination_over_range)."""
    observations = list(observations)
    history: list[tuple[str, dict | None]] = []
    for month in _months_before(policy, periods[0]):
        # a month before the range counts only when the results hold evidence for it: a month
        # without any is unknown (never taken as met nor as missed), as in the live path
        history.append((month, evaluate_offline(policy, observations, month, maintenance, now=now,
                                                expected_by_component=expected_by_component)
                        if _evidence_in(policy, observations, month) else None))
    reports = []
    for month in periods:
        report = evaluate_offline(policy, observations, month, maintenance, now=now, history=list(history),
                                  expected_by_component=expected_by_component, fee=fee)
        reports.append(report)
        history.append((month, report))
    return range_result(policy, list(periods), reports)


async def reports_over_range_from_db(session: AsyncSession, policy: Policy, periods: Sequence[str], *,
                                     extra_maintenance: Sequence[Announcement] = (),
                                     expected_by_component: dict[str, list[str]] | None = None,
                                     now: datetime | None = None) -> dict[str, Any]:
    """The same over the collector's database: each month as GET /api/v1/reports gives it (with
    its own history of the months before it, report_from_db)."""
    reports = [await report_from_db(session, policy, month, extra_maintenance=extra_maintenance,
                                    expected_by_component=expected_by_component, now=now) for month in periods]
    return range_result(policy, list(periods), reports)


def termination_over_range(policy: Policy, periods: list[str], reports: list[dict]) -> dict[str, Any]:
    """NexGen Service Level Addendum §4 ("if we do not achieve the minimum uptime requirement for
    three consecutive months") over a range: the right arose (true) at the first month of the
    range that closes such a run; false when every month's own verdict is false (each was met, or
    follows a met month); otherwise undetermined (None), because a month whose availability is
    unknown, or whose unknown minutes decide it, is taken neither as met nor as missed."""
    months = getattr(policy.credit, "termination_after_months", None)
    if not months:
        return {"applies": False, "right": None, "note": "the contract has no termination right for missed months"}
    # the core asks for unknown earlier months "as history"; over a range, they are months the
    # evidence does not cover, and starting the range earlier is what would decide them
    per_month = [{"period": p, "right": r.get("termination_right"),
                  "note": r.get("termination_note", "").replace("(pass it as history)",
                                                                "(no evidence: start the range earlier)")}
                 for p, r in zip(periods, reports)]
    arose = next((m for m in per_month if m["right"] is True), None)
    if arose is not None:
        right, note = True, f"arose with {arose['period']}: {arose['note']}"
    elif all(m["right"] is False for m in per_month):
        right, note = False, f"no {months} consecutive months below {policy.target_percent} % in {periods[0]}..{periods[-1]}"
    else:
        open_months = [m["period"] for m in per_month if m["right"] is None]
        right, note = None, (f"undetermined for {', '.join(open_months)}: "
                             + "; ".join(f"{m['period']}: {m['note']}" for m in per_month if m["right"] is None))
    return {"applies": True, "consecutive_months": months, "target_percent": policy.target_percent,
            "right": right, "note": note, "months": per_month}


def range_result(policy: Policy, periods: list[str], reports: list[dict]) -> dict[str, Any]:
    return {"policy": policy.name, "periods": periods, "first": periods[0], "last": periods[-1],
            "months": [{"period": p, "availability_percent": r.get("availability_percent"),
                        "availability_worst_percent": r.get("availability_worst_percent"),
                        "target_percent": r.get("target_percent"), "met": r.get("met"), "verdict": r.get("verdict"),
                        "downtime_minutes": r.get("downtime_minutes"), "unknown_minutes": r.get("unknown_minutes")}
                       for p, r in zip(periods, reports)],
            "termination": termination_over_range(policy, periods, reports),
            "reports": reports}


def render_range_text(data: dict[str, Any]) -> str:
    """Each month's report as `report --period YYYY-MM` prints it, then the range's summary."""
    from collector.rules.report import render_text

    parts = [render_text(r) for r in data["reports"]]
    lines = [f"Summary {data['policy']} {data['first']}..{data['last']}"]
    for m in data["months"]:
        met = "undetermined" if m["met"] is None else ("met" if m["met"] else "missed")
        best, worst = m["availability_percent"], m["availability_worst_percent"]
        figure = ("no evidence" if best is None else f"{best} %" if worst in (None, best) else f"{best} % (worst {worst} %)")
        lines.append(f"  {m['period']}  {figure:32}  target {m['target_percent']} %  {met}")
    t = data["termination"]
    if t["applies"]:
        verdict = "undetermined" if t["right"] is None else ("yes" if t["right"] else "no")
        lines.append(f"Termination right ({t['consecutive_months']} consecutive months below target): {verdict}")
        lines.append(f"  {t['note']}")
    else:
        lines.append(f"Termination right: {t['note']}")
    return "\n".join(parts) + "\n" + "\n".join(lines) + "\n"


def render_range_csv(data: dict[str, Any]) -> str:
    """The months' CSV rows under one header (render_csv of each month)."""
    from collector.rules.report import render_csv

    out = []
    for i, report in enumerate(data["reports"]):
        text = render_csv(report)
        out.append(text if i == 0 else text.split("\n", 1)[1])
    return "".join(out)


