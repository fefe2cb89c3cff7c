"""The status page's reads: a handful of statements whatever the number of services and days.

1. Windows of the last 12 months, all policies at once, without their evidence; then the evidence
   of the windows the page lists (at most pages.MAX_INCIDENTS), by id.
2. Maintenance of the last 12 months and ahead, all policies at once.
3. Which (check, day) pairs of the last 90 days have any result: one statement of 90 EXISTS
   columns per configured check; each EXISTS is one seek in the (check, slot) index, so its cost
   does not grow with the number of results (a scan grouping a year of results by day would).
4. The newest slot of each check in the last few intervals (for "no data").
5. The failing (or degraded) results of the listed windows' first and last rounds, to show what
   the agents saw: one statement, one (check, slot IN ...) seek per check.
Like collector.store, these only read; the caller owns the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from collector import store
from collector.db import Check, Maintenance, OutageWindow, Result
from collector.reporting import series_of
from collector.rules.recurrence import expand_maintenance

__all__ = ["windows_since", "window_evidence", "maintenance_since", "series_occurrences", "OccurrenceRow", "evidence_days", "evidence_and_first_slots", "latest_slots", "window_results"]

DAY = timedelta(days=1)


async def windows_since(session: AsyncSession, since: datetime) -> list[Any]:
    """Every window still open or ending after `since`, all policies, oldest first: id, policy,
    start and end only (a year of evidence would be most of the bytes; see window_evidence)."""
    stmt = (select(OutageWindow.id, OutageWindow.policy, OutageWindow.start, OutageWindow.end)
            .where(OutageWindow.end.is_(None) | (OutageWindow.end > since))
            .order_by(OutageWindow.start, OutageWindow.policy))
    return list((await session.execute(stmt)).all())


async def window_evidence(session: AsyncSession, ids: Sequence[int]) -> dict[int, Any]:
    """{window id: its stored evidence} for the windows a page lists."""
    if not ids:
        return {}
    stmt = select(OutageWindow.id, OutageWindow.evidence).where(OutageWindow.id.in_(list(ids)))
    return {row.id: row.evidence for row in (await session.execute(stmt)).all()}


async def maintenance_since(session: AsyncSession, since: datetime) -> list[Maintenance]:
    """Every announcement ending after `since` (including those still ahead), all policies."""
    stmt = select(Maintenance).where(Maintenance.end > since).order_by(Maintenance.start, Maintenance.id)
    return list((await session.scalars(stmt)).all())


@dataclass(frozen=True)
class OccurrenceRow:
    """One occurrence of a recurring maintenance series, shaped like a `maintenance` row for the
    pages (it is judged as an announcement recorded when its series was)."""
    policy: str
    kind: str
    start: datetime
    end: datetime
    recorded_at: datetime | None
    stated_announced: datetime | None
    note: str
    recorded_by: str
    author: str
    cancelled_at: datetime | None
    cancel_reason: str
    id: int | None = None


async def series_occurrences(session: AsyncSession, since: datetime, until: datetime) -> list[OccurrenceRow]:
    """The occurrences of every recurring series overlapping [since, until), cancelled ones too."""
    by_policy: dict[str, list[Any]] = {}
    for row, cancelled in await store.list_maintenance_series(session):
        by_policy.setdefault(row.policy, []).append((row, series_of(row, cancelled)))
    out = []
    for policy, series in sorted(by_policy.items()):
        for ann in expand_maintenance([s for _row, s in series], since, until, include_cancelled=True):
            out.append(OccurrenceRow(policy, ann.kind, ann.start, ann.end, ann.recorded_at, ann.announced,
                                     ann.note or "recurring maintenance", ann.recorded_by, ann.author,
                                     ann.cancelled_at, ann.cancel_reason, None))
    return out


async def evidence_days(session: AsyncSession, checks: Sequence[str], starts: Sequence[datetime]) -> dict[str, set[int]]:
    """{check: indexes of the days in `starts` (UTC midnights) with at least one result}.

    The configured checks are read from the `checks` table, which the collector syncs from its
    config at start; a check it does not hold yet simply has no evidence.
    """
    return (await evidence_and_first_slots(session, checks, starts))[0]


async def evidence_and_first_slots(session: AsyncSession, checks: Sequence[str],
                                   starts: Sequence[datetime]) -> tuple[dict[str, set[int]], dict[str, datetime]]:
    """evidence_days, and in the same statement {check: its first slot since the first day}: the
    time of the first day before it had no result at all (the availability figures must not
    count it as judged; one more seek in the same index per check)."""
    if not checks or not starts:
        return {}, {}
    columns = [
        exists().where(Result.check == Check.name, Result.slot >= start, Result.slot < start + DAY).label(f"d{i}")
        for i, start in enumerate(starts)
    ]
    first = (select(func.min(Result.slot)).where(Result.check == Check.name, Result.slot >= starts[0])
             .scalar_subquery().label("first_slot"))
    stmt = select(Check.name, first, *columns).where(Check.name.in_(list(checks)))
    out: dict[str, set[int]] = {}
    firsts: dict[str, datetime] = {}
    for row in (await session.execute(stmt)).all():
        out[row[0]] = {i for i, present in enumerate(row[2:]) if present}
        if row[1] is not None:
            firsts[row[0]] = _utc(row[1])
    return out, firsts


def _utc(value: Any) -> datetime:
    # a bare MIN() loses the column's type on SQLite: it may come back as text or naive
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


async def latest_slots(session: AsyncSession, checks: Sequence[str], since: datetime) -> dict[str, datetime]:
    """{check: newest slot at or after `since`}; a check without results since then is absent."""
    if not checks:
        return {}
    stmt = (select(Result.check, func.max(Result.slot))
            .where(Result.check.in_(list(checks)), Result.slot >= since)
            .group_by(Result.check))
    return {check: slot for check, slot in (await session.execute(stmt)).all() if slot is not None}



async def window_results(session: AsyncSession, slots: Sequence[tuple[str, datetime]]) -> list[Any]:
    """The failed or degraded results of the given (check, slot) pairs, with their details:
    agent_id, check, slot, ok, degraded, error, detail, status_code, latency_ms, extra."""
    by_check: dict[str, set[datetime]] = {}
    for check, slot in slots:
        by_check.setdefault(check, set()).add(slot)
    if not by_check:
        return []
    stmt = (select(Result.agent_id, Result.check, Result.slot, Result.ok, Result.degraded, Result.error, Result.detail,
                   Result.status_code, Result.latency_ms, Result.extra)
            .where(or_(*(and_(Result.check == check, Result.slot.in_(sorted(wanted)))
                         for check, wanted in sorted(by_check.items()))))
            .where(or_(Result.ok.is_(False), Result.degraded.is_(True))))
    return list((await session.execute(stmt)).all())
