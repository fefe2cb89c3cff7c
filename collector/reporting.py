"""SLA reports and claim checks over the collector's database, through the same pure core that
offline reports use (collector.rules), so a figure is the same wherever it is computed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import store
from collector.db import Maintenance
from collector.rules.model import Announcement
from collector.rules.offline import evaluate_offline
from collector.rules.periods import month_bounds
from collector.rules.policy import Policy
from collector.rules.report import verify_claim
from collector.rules.rounds import evaluate_rounds, slot_of
from collector.rules.windows import find_windows


async def load_maintenance(session: AsyncSession, policy: str) -> list[Announcement]:
    rows = (await session.scalars(select(Maintenance).where(Maintenance.policy == policy).order_by(Maintenance.start))).all()
    return [Announcement(kind=r.kind, announced=r.announced, start=r.start, end=r.end, note=r.note) for r in rows]


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
    now = now or datetime.now(timezone.utc)
    start, end = month_bounds(period, policy.timezone)
    observations = await _observations_around(session, policy, start, end)
    maintenance = [*await load_maintenance(session, policy.name), *extra_maintenance]
    history = []
    for back in (1, 2):
        prev = _previous_period(period, back)
        p_start, p_end = month_bounds(prev, policy.timezone)
        prev_obs = await _observations_around(session, policy, p_start, p_end)
        if prev_obs:
            prev_report = evaluate_offline(policy, prev_obs, prev, maintenance, now=now,
                                           expected_by_component=expected_by_component)
            history.append((prev, prev_report["availability_percent"]))
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
    observations = await _observations_around(session, policy, claim_start, claim_end)
    maintenance = [*await load_maintenance(session, policy.name), *extra_maintenance]
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
        windows = []
    return verify_claim(policy, claim_start, claim_end, windows, maintenance)


def _previous_period(period: str, back: int) -> str:
    year, month = (int(x) for x in period.split("-"))
    index = year * 12 + (month - 1) - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
