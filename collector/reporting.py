"""SLA reports and claim checks over the collector's database, through the same pure core that
offline reports use (collector.rules), so a figure is the same wherever it is computed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import store
from collector.db import Maintenance
from collector.offload import run_off_loop
from collector.rules.model import Announcement
from collector.rules.offline import evaluate_offline
from collector.rules.periods import month_bounds
from collector.rules.policy import Policy
from collector.rules.report import verify_claim
from collector.rules.rounds import evaluate_rounds, slot_of
from collector.rules.windows import find_windows


def announcement_of(row: Maintenance) -> Announcement:
    """The rules core's view of a stored announcement."""
    return Announcement(kind=row.kind, announced=row.stated_announced, start=row.start, end=row.end,
                        note=row.note or "", recorded_at=row.recorded_at, recorded_by=row.recorded_by,
                        author=row.author or "", cancelled_at=row.cancelled_at, cancel_reason=row.cancel_reason or "",
                        id=row.id)


async def load_maintenance(session: AsyncSession, policy: str, *, include_cancelled: bool = False) -> list[Announcement]:
    """The policy's announcements in start order; cancelled ones only with `include_cancelled`
    (reports list them, excluding nothing; notifications leave them out)."""
    stmt = select(Maintenance).where(Maintenance.policy == policy).order_by(Maintenance.start, Maintenance.id)
    if not include_cancelled:
        stmt = stmt.where(Maintenance.cancelled_at.is_(None))
    return [announcement_of(r) for r in (await session.scalars(stmt)).all()]


async def _observations_around(session: AsyncSession, policy: Policy, start: datetime, end: datetime):
    # A run that crosses the range's edges is judged whole: look a day beyond each edge (runs
    # longer than that are extended step by step by the core's own lookback in evaluate_offline).
    margin = timedelta(days=1) + timedelta(seconds=policy.min_duration)
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
    start, end = month_bounds(period, policy.timezone)
    observations = await _observations_around(session, policy, start, end)
    maintenance = [*await load_maintenance(session, policy.name, include_cancelled=True), *extra_maintenance]
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
    observations = await _observations_around(session, policy, claim_start, claim_end)
    maintenance = [*await load_maintenance(session, policy.name, include_cancelled=True), *extra_maintenance]
    return claim_from_observations(policy, observations, claim_start, claim_end, maintenance,
                                   expected_by_component=expected_by_component)


def claim_from_observations(policy: Policy, observations, claim_start, claim_end, maintenance, *,
                            expected_by_component=None) -> dict[str, Any]:
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


def _previous_period(period: str, back: int) -> str:
    year, month = (int(x) for x in period.split("-"))
    index = year * 12 + (month - 1) - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
