"""Live evaluation: the stored windows are what the offline report computes from the same results.

The collector does not keep its own incremental state machine. Every tick it re-runs the pure
evaluation core (collector.rules) over the part of history that can still change:
  1. the rounds whose grace period ended since the last tick (the tail),
  2. the slots that late or replayed results touched (marked dirty by ingest),
  3. extended back to the start of any window still open there, and further back while the
     round before the range is FAILED, so a run is always judged whole (issue 3: "whether a run
     qualifies is judged on the whole run").
It then replaces the stored windows from that point on. Because the core is a pure function of the
results, live and offline agree by construction, also when results arrive late or out of order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collector import store
from collector.rules.model import Verdict, Window
from collector.rules.policy import Policy
from collector.rules.rounds import evaluate_rounds, slot_of
from collector.rules.windows import find_windows

log = logging.getLogger("uptime.collector.evaluator")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Results another replica committed just before the previous scan may carry a received_at a bit
# older than it (clock and commit order): scans overlap by this much; re-judging is idempotent.
RESCAN_OVERLAP = timedelta(seconds=30)
# A replica that becomes the evaluator re-judges what arrived in this long before it took over.
RESCAN_ON_LEAD = timedelta(minutes=10)


@dataclass
class LivePolicy:
    """A policy evaluated live, with the agents each of its components expects (the assignments)."""

    policy: Policy
    expected_by_component: dict[str, list[str]]
    dirty_from: datetime | None = None
    last_settled: datetime | None = None
    open_window: dict[str, Any] | None = None
    windows_known: bool = False

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.policy.interval)


@dataclass(frozen=True)
class WindowEvent:
    kind: str  # "verified" | "resolved" | "withdrawn"
    policy: str
    start: datetime
    end: datetime | None
    evidence: dict[str, Any] = field(default_factory=dict)


def window_record(policy: Policy, window: Window) -> dict[str, Any]:
    # Evidence: per round, which agents failed, succeeded or were missing (issue 3, "Evidence").
    evidence = {"policy_hash": policy.content_hash(), "rounds": [r.to_dict() for r in window.rounds]}
    return {"start": window.start, "end": window.end, "rule_hash": policy.content_hash(), "evidence": evidence}


class LiveEvaluator:
    def __init__(
        self,
        sessionmaker: async_sessionmaker,
        policies: Sequence[LivePolicy],
        grace: float,
        on_event: Callable[[WindowEvent], Awaitable[None] | None] | None = None,
        outbox: Callable[[AsyncSession, list[WindowEvent]], Awaitable[None]] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.policies = list(policies)
        self.grace = timedelta(seconds=grace)
        self.on_event = on_event
        self._last_scan: datetime | None = None
        self._by_check: dict[str, list[LivePolicy]] = {}
        for lp in self.policies:
            for component in lp.policy.components:
                self._by_check.setdefault(component, []).append(lp)

    async def scan_received(self, now: datetime) -> None:
        """Mark dirty what any replica stored since the last scan (not only this one's ingest):
        the evaluating replica must see results that reached the others."""
        since = (self._last_scan - RESCAN_OVERLAP) if self._last_scan is not None else now - RESCAN_ON_LEAD
        async with self.sessionmaker() as session:
            received = await store.slots_received_since(session, since)
        for check, slot in received.items():
            self.mark_dirty(check, slot)
        self._last_scan = now

    def lost_lead(self) -> None:
        """Another replica evaluates now; when this one leads again it rescans and re-judges."""
        self._last_scan = None
        for lp in self.policies:
            lp.windows_known = False

    async def refresh_open_windows(self) -> None:
        """A replica that does not evaluate still reports open outages (from the database)."""
        async with self.sessionmaker() as session:
            open_now = await store.open_windows(session)
        for lp in self.policies:
            start = open_now.get(lp.name)
            lp.open_window = {"start": start} if start is not None else None

    def mark_dirty(self, check: str, slot: datetime) -> None:
        """Ingest calls this after its transaction committed: these rounds must be judged again."""
        for lp in self._by_check.get(check, ()):
            if lp.dirty_from is None or slot < lp.dirty_from:
                lp.dirty_from = slot

    def settled_until(self, lp: LivePolicy, now: datetime) -> datetime:
        """End of the last round whose grace period is over: later rounds may still get reports."""
        return slot_of(now - self.grace, lp.policy.interval)

    async def tick(self, now: datetime | None = None) -> list[WindowEvent]:
        now = now or datetime.now(timezone.utc)
        events: list[WindowEvent] = []
        for lp in self.policies:
            try:
                events.extend(await self._evaluate(lp, now))
            except Exception:  # one broken policy must not stop the others from being evaluated
                log.exception("evaluation of policy %s failed", lp.name)
        for event in events:
            if self.on_event is not None:
                result = self.on_event(event)
                if result is not None:
                    await result
        return events

    async def _evaluate(self, lp: LivePolicy, now: datetime) -> list[WindowEvent]:
        settled = self.settled_until(lp, now)
        if lp.dirty_from is None and lp.last_settled == settled and lp.windows_known:
            return []
        dirty_from, lp.dirty_from = lp.dirty_from, None
        interval = lp.interval
        # A window can only become verified once its run reaches min_duration, so looking back
        # that far (plus two rounds) from the newest settled round finds every new window.
        lookback = max(timedelta(seconds=lp.policy.min_duration), interval) + 2 * interval
        start = settled - lookback
        if dirty_from is not None:
            start = min(start, slot_of(dirty_from, lp.policy.interval))
        async with self.sessionmaker() as session:
            stored = await store.load_windows(session, lp.name, since=start)
            for w in stored:
                start = min(start, w.start)
            first = await store.first_result_slot(session, lp.policy.components)
            if first is None:
                lp.last_settled, lp.windows_known = settled, True
                return []
            start = max(start, slot_of(first, lp.policy.interval))
            rounds = await self._rounds(session, lp, start, settled)
            # Extend back while the round just before the range failed: the run began earlier.
            while rounds and rounds[0].verdict is Verdict.FAILED and start > first:
                start = max(first, start - 4 * lookback)
                start = slot_of(start, lp.policy.interval)
                rounds = await self._rounds(session, lp, start, settled)
            windows = find_windows(lp.policy, rounds, open_tail=True)
            records = [window_record(lp.policy, w) for w in windows]
            before, after = await store.replace_windows(session, lp.name, start, records)
            events = _diff(lp.name, before, after)
            if events and self.outbox is not None:
                # The notification is written in the same transaction as the window behind it.
                await self.outbox(session, events)
            await session.commit()
        lp.last_settled, lp.windows_known = settled, True
        lp.open_window = next(({"start": w.start} for w in after if w.end is None), None)
        return events

    async def _rounds(self, session, lp: LivePolicy, start: datetime, end: datetime):
        if end <= start:
            return []
        observations = await store.load_observations(session, lp.policy.components, start, end)
        return evaluate_rounds(lp.policy, observations, start, end, expected_by_component=lp.expected_by_component)

    def open_windows(self) -> dict[str, datetime | None]:
        return {lp.name: (lp.open_window or {}).get("start") for lp in self.policies}


def _diff(policy: str, before: Sequence[Any], after: Sequence[Any]) -> list[WindowEvent]:
    events: list[WindowEvent] = []
    old = {w.start: w for w in before}
    new = {w.start: w for w in after}
    for start, w in new.items():
        prev = old.get(start)
        if prev is None:
            events.append(WindowEvent("verified", policy, w.start, w.end, w.evidence))
            if w.end is not None:
                events.append(WindowEvent("resolved", policy, w.start, w.end, w.evidence))
        elif prev.end is None and w.end is not None:
            events.append(WindowEvent("resolved", policy, w.start, w.end, w.evidence))
    for start, w in old.items():
        if start not in new:
            events.append(WindowEvent("withdrawn", policy, w.start, w.end, w.evidence))
    return events
