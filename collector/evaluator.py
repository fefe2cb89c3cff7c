"""Live evaluation: the stored windows are what the offline report computes from the same results.

The collector does not keep its own incremental state machine. Every tick it re-runs the pure
evaluation core (collector.rules) over the parts of history that can still change:
  1. the tail: the rounds whose grace period ended since the last tick, with enough before them
     to see a run reach the policy's minimum duration;
  2. the stretches of slots that late or replayed results touched (marked by ingest, here or on
     another replica);
  3. each range widened to the whole of any stored window it touches, and further back (forward)
     while its first (last) round is FAILED, so a run is always judged whole (issue 3: "whether a
     run qualifies is judged on the whole run").
It then replaces the stored windows inside each range. Because the core is a pure function of the
results, live and offline agree by construction, also when results arrive late or out of order.
Work per tick follows what arrived, not how far back it reaches: replaying a week of backlog costs
the week once, not the week on every tick.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collector import store
from collector.rules.model import Round, Window
from collector.rules.policy import Policy
from collector.rules.rounds import ObservationIndex, slot_of
from collector.rules.runs import runs_of
from collector.rules.windows import find_windows, is_down

log = logging.getLogger("uptime.collector.evaluator")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Marks another replica committed just before the previous scan may carry a received_at a bit
# older than it (clock and commit order): scans overlap by this much; re-judging is idempotent.
RESCAN_OVERLAP = timedelta(seconds=30)
# A replica that becomes the evaluator re-judges what others stored this long before it took over.
RESCAN_ON_LEAD = timedelta(minutes=10)
# Rounds of marked history judged per policy and tick; the rest waits for the next tick, so that a
# replayed backlog does not hold the event loop (and ingest) for long.
ROUNDS_PER_TICK = 50_000
# How far back a tail judged with many others may reach to take in a stored window; a longer
# outage is judged on its own, so that one policy's history does not widen every policy's read.
MAX_TAIL_REACH = timedelta(hours=6)
# How far back a policy judged for the first time is judged at start: the status page's 90 days.
CATCH_UP_SPAN = timedelta(days=90)


@dataclass
class LivePolicy:
    """A policy evaluated live, with the agents each of its components expects (the assignments)."""

    policy: Policy
    expected_by_component: dict[str, list[str]]
    # stretches [first slot, last slot] that results touched and that must be judged again
    dirty: list[tuple[datetime, datetime]] = field(default_factory=list)
    last_settled: datetime | None = None
    open_window: dict[str, Any] | None = None
    windows_known: bool = False
    progress_loaded: bool = False
    # the earliest slot with evidence of any component (None: not read yet); results arriving
    # later can only move it back, and mark() follows them
    first_slot: datetime | None = None

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.policy.interval)

    @property
    def lookback(self) -> timedelta:
        """A window can only become verified once its run reaches min_duration, so looking back
        that far (plus two rounds) from the newest settled round finds every new window."""
        return max(timedelta(seconds=self.policy.min_duration), self.interval) + 2 * self.interval

    def backlog_before(self, settled: datetime) -> bool:
        """Marked history left for a later tick (the per-tick budget): while some is, progress
        does not move, so that everything before `judged_until` has been judged (the reports
        from the rollups rely on it)."""
        return any(lo < settled for lo, _ in self.dirty)

    def mark(self, first: datetime, last: datetime) -> None:
        """Add a stretch to judge again; stretches closer than the lookback are judged as one."""
        if self.first_slot is not None and first < self.first_slot:
            # the stretch up to the old first slot was never judged (judging starts at the first
            # evidence): judge it too, so that it is stored as UNKNOWN runs, not left unjudged
            # (reports from the rollups take unjudged time inside [first slot, judged_until) as up)
            last = max(last, self.first_slot)
            self.first_slot = first
        gap = self.lookback
        merged: list[tuple[datetime, datetime]] = []
        for lo, hi in sorted([*self.dirty, (first, last)]):
            if merged and lo <= merged[-1][1] + gap:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.dirty = merged


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
        replica: str = "",
    ) -> None:
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.policies: list[LivePolicy] = []
        self.grace = timedelta(seconds=grace)
        self.on_event = on_event
        self.replica = replica
        self._last_scan: datetime | None = None
        self.stopping = False  # set at shutdown: a tick ends after the policy it is judging
        # tails of many policies judged in one transaction; off, each policy on its own (the
        # reference the batched pass is tested and measured against)
        self.batch_tails = True
        # one tick at a time: two interleaved ticks (the periodic job and a caller's) would write
        # the same rounds' rollup from different reads, the later one from stale evidence
        self._ticking = asyncio.Lock()
        self._by_check: dict[str, list[LivePolicy]] = {}
        self.replace_policies(policies)

    def replace_policies(self, policies: Sequence[LivePolicy]) -> None:
        """Take up a changed check set. A policy whose rule and expected agents are unchanged keeps
        its state; a changed one keeps what is still to be judged and judges its tail afresh; a
        removed one is no longer evaluated (its stored windows stay)."""
        old = {lp.name: lp for lp in self.policies}
        kept: list[LivePolicy] = []
        for lp in policies:
            prev = old.get(lp.name)
            if prev is not None and (prev.policy.content_hash(), prev.expected_by_component) == (
                    lp.policy.content_hash(), lp.expected_by_component):
                kept.append(prev)
                continue
            if prev is not None:
                lp.dirty, lp.last_settled, lp.open_window = prev.dirty, prev.last_settled, prev.open_window
            kept.append(lp)
        self.policies = kept
        self._by_check = {}
        for lp in self.policies:
            for component in lp.policy.components:
                self._by_check.setdefault(component, []).append(lp)

    async def scan_received(self, now: datetime) -> None:
        """Mark what other replicas (and imports) stored since the last scan, from their ingest
        marks: the evaluating replica must judge results that reached the others too. What this
        replica stored itself it has marked already (note_results)."""
        since = (self._last_scan - RESCAN_OVERLAP) if self._last_scan is not None else now - RESCAN_ON_LEAD
        async with self.sessionmaker() as session:
            marks = await store.marks_since(session, since, other_than=self.replica)
        for check, first, last in marks:
            self.mark_dirty(check, first, last)
        self._last_scan = now

    def lost_lead(self) -> None:
        """Another replica evaluates now; when this one leads again it rescans and re-judges."""
        self._last_scan = None
        for lp in self.policies:
            lp.windows_known = False

    def take_over(self, names: Collection[str]) -> None:
        """The policies `names` were judged by another collector until now (an evaluation shard
        taken over): their progress is read again from the database, so that the rounds judged by
        nobody since it stopped are judged, and what other replicas stored is rescanned."""
        self._last_scan = None
        for lp in self.policies:
            if lp.name in names:
                lp.windows_known = False
                lp.progress_loaded = False

    async def refresh_open_windows(self, names: Collection[str] | None = None) -> None:
        """A replica that does not evaluate (all policies, or those `names`) still reports open
        outages (from the database)."""
        async with self.sessionmaker() as session:
            open_now = await store.open_windows(session)
        for lp in self.policies:
            if names is not None and lp.name not in names:
                continue
            start = open_now.get(lp.name)
            lp.open_window = {"start": start} if start is not None else None

    def mark_dirty(self, check: str, first: datetime, last: datetime | None = None) -> None:
        """Ingest calls this after its transaction committed: the rounds of slots first..last of
        `check` must be judged again."""
        for lp in self._by_check.get(check, ()):
            lp.mark(first, last if last is not None else first)

    def settled_until(self, lp: LivePolicy, now: datetime) -> datetime:
        """End of the last round whose grace period is over: later rounds may still get reports."""
        return slot_of(now - self.grace, lp.policy.interval)

    async def tick(self, now: datetime | None = None, only: Collection[str] | None = None) -> list[WindowEvent]:
        """One pass over all policies, or over those named in `only` (this collector's shards)."""
        async with self._ticking:
            return await self._tick(now or datetime.now(timezone.utc), only)

    async def _tick(self, now: datetime, only: Collection[str] | None = None) -> list[WindowEvent]:
        """One pass. Policies whose only work is their tail (the usual case: the newest rounds
        settled) are judged together with a bounded number of queries (`_judge_tails`); marked
        history (late or replayed results) and tails next to a stored window are judged one
        policy at a time, as their ranges may grow."""
        events: list[WindowEvent] = []
        policies = self.policies if only is None else [lp for lp in self.policies if lp.name in only]
        try:
            await self._load_progress([lp for lp in policies if not lp.progress_loaded], now)
        except Exception:
            log.exception("loading evaluation progress failed")
        tails: list[tuple[LivePolicy, datetime, datetime]] = []
        single: list[tuple[LivePolicy, datetime, list, datetime | None]] = []
        for lp in policies:
            if not lp.progress_loaded:
                continue  # its progress could not be read: next tick
            settled = self.settled_until(lp, now)
            closed, tail = self._ranges(lp, settled)
            if closed or not self.batch_tails:
                single.append((lp, settled, closed, tail))
            elif tail is not None:
                tails.append((lp, settled, tail))
        if tails and not self.stopping:
            try:
                found, rest = await self._judge_tails(tails)
                events.extend(found)
            except Exception:
                log.exception("evaluation of %d policies' newest rounds failed; judging them one by one", len(tails))
                rest = [lp for lp, _, _ in tails]
            again = {id(lp) for lp in rest}
            single.extend((lp, settled, [], tail) for lp, settled, tail in tails if id(lp) in again)
        for lp, settled, closed, tail in single:
            if self.stopping:
                # what is left is marked again; the next start (or tick) judges it
                for lo, end in closed:
                    lp.mark(lo, end - lp.interval)
                if tail is not None and tail < settled:
                    lp.mark(tail, settled - lp.interval)
                continue
            try:
                events.extend(await self._evaluate(lp, now, (closed, tail), settled))
            except Exception:  # one broken policy must not stop the others from being evaluated
                log.exception("evaluation of policy %s failed", lp.name)
        for event in events:
            if self.on_event is not None:
                result = self.on_event(event)
                if result is not None:
                    await result
        return events

    def _ranges(self, lp: LivePolicy, settled: datetime) -> tuple[list[tuple[datetime, datetime]], datetime | None]:
        """The marked ranges [start, end) to judge in this tick (at most ROUNDS_PER_TICK rounds,
        oldest first; the rest stays marked), and the start of the tail range (None: no tail)."""
        interval, lookback = lp.interval, lp.lookback
        tail: datetime | None = None
        if not (lp.last_settled == settled and lp.windows_known):
            tail = settled - lookback
            if lp.windows_known and lp.last_settled is not None:
                # ticks may come late (a busy loop, a lead taken over): judge every round since the last
                tail = min(tail, lp.last_settled - lookback)
        budget = ROUNDS_PER_TICK * interval
        ranges: list[tuple[datetime, datetime]] = []
        keep: list[tuple[datetime, datetime]] = []
        for lo, hi in lp.dirty:
            lo = slot_of(lo, lp.policy.interval)
            if lo >= settled:
                keep.append((lo, hi))  # not settled yet: the tail will take it in a later tick
                continue
            if hi >= settled:
                keep.append((settled, hi))
                hi = settled - interval
            if budget <= timedelta(0):
                keep.append((lo, hi))
                continue
            end = min(slot_of(hi, lp.policy.interval) + interval, lo + budget)
            if end <= hi:
                keep.append((end, hi))
            budget -= end - lo
            ranges.append((lo, end))
        lp.dirty = keep
        closed = []
        for lo, end in ranges:
            if tail is not None and end + lookback >= tail:
                tail = min(tail, lo)  # close to the tail: one range
            elif tail is None and end + lookback >= settled - lookback:
                tail = min(lo, settled - lookback)
            else:
                closed.append((lo, end))
        return closed, tail

    async def _load_progress(self, lps: Sequence[LivePolicy], now: datetime) -> None:
        """`_catch_up` for many policies: their progress and first slots in a few queries."""
        if not lps:
            return
        async with self.sessionmaker() as session:
            done = await store.judged_until(session, [lp.name for lp in lps])
            pending = [lp for lp in lps if lp.name not in done]
            firsts = await store.first_result_slots(
                session, [c for lp in pending for c in lp.policy.components]) if pending else {}
        for lp in lps:
            settled = self.settled_until(lp, now)
            lp.progress_loaded = True
            if lp.name in done:
                since = done[lp.name] - lp.lookback
            else:
                first = min((firsts[c] for c in lp.policy.components if c in firsts), default=None)
                if first is None:
                    continue
                lp.first_slot = first
                since = max(slot_of(first, lp.policy.interval), settled - CATCH_UP_SPAN)
            if since < settled - lp.lookback:
                lp.mark(since, settled - lp.interval)

    async def _judge_tails(self, tails: Sequence[tuple[LivePolicy, datetime, datetime]]
                           ) -> tuple[list[WindowEvent], list[LivePolicy]]:
        """Judge the tails [tail, settled) of many policies in one transaction: one read of their
        windows, one of their evidence, one write of their runs. A policy whose tail touches a
        stored window starting before it, or starts with a down round (a run that may reach
        further back), is returned to be judged on its own (`_judge` grows its range)."""
        rest: list[LivePolicy] = []
        async with self.sessionmaker() as session:
            unknown_first = [lp for lp, _, _ in tails if lp.first_slot is None]
            if unknown_first:
                firsts = await store.first_result_slots(session, [c for lp in unknown_first for c in lp.policy.components])
                for lp in unknown_first:
                    lp.first_slot = min((firsts[c] for c in lp.policy.components if c in firsts), default=None)
            live: list[tuple[LivePolicy, datetime, datetime, datetime]] = []
            for lp, settled, tail in tails:
                if lp.first_slot is None:  # no evidence at all yet: nothing to judge
                    lp.last_settled, lp.windows_known = settled, True
                    continue
                first = slot_of(lp.first_slot, lp.policy.interval)
                live.append((lp, settled, first, max(tail, first)))
            if not live:
                return [], rest
            names = [lp.name for lp, *_ in live]
            lo = min(start for _, _, _, start in live)
            hi = max(settled for _, settled, _, _ in live)
            stored = await store.windows_of(session, names, lo)
            # A tail touching a stored window (an outage still open, or one that just ended) is
            # judged from before that window's start, as `_judge` would grow it: the window's
            # first round is down, so the range takes in `step` more.
            extended: list[tuple[LivePolicy, datetime, datetime, datetime]] = []
            for lp, settled, first, start in live:
                earlier = [w.start for w in stored.get(lp.name, ()) if (w.end is None or w.end > start) and w.start < start]
                if earlier:
                    start = slot_of(max(first, min(earlier) - 4 * lp.lookback), lp.policy.interval)
                    if lp.last_settled is not None and start < lp.last_settled - MAX_TAIL_REACH:
                        rest.append(lp)  # a long outage: read its history on its own
                        continue
                extended.append((lp, settled, first, start))
            live = extended
            if not live:
                return [], rest
            lo_all = min(start for _, _, _, start in live)
            if lo_all < lo:
                stored = await store.windows_of(session, names, lo_all)
            # evidence: the checks of extended tails from the earliest extended start, the others
            # from the earliest tail (each check read once)
            far = {c for lp, _, _, start in live if start < lo for c in lp.policy.components}
            near = {c for lp, *_ in live for c in lp.policy.components} - far
            by_check: dict[str, list[Any]] = {}
            for checks, since in ((sorted(far), lo_all), (sorted(near), lo)):
                if checks:
                    for o in await store.load_observations(session, checks, since, hi):
                        by_check.setdefault(o.check, []).append(o)
            judged = []
            for lp, settled, first, start in live:
                mine = [w for w in stored.get(lp.name, ()) if w.end is None or w.end > start]
                if any(w.start < start for w in mine):
                    rest.append(lp)
                    continue
                observations = [o for c in lp.policy.components for o in by_check.get(c, ()) if start <= o.ts < settled]
                index = ObservationIndex(lp.policy, observations, expected_by_component=lp.expected_by_component)
                rounds = index.rounds(start, settled, sparse=True)
                if rounds and is_down(lp.policy, rounds[0].verdict) and start > first:
                    rest.append(lp)
                    continue
                records = [window_record(lp.policy, w) for w in find_windows(lp.policy, rounds, open_tail=True)]
                before, after = await store.replace_windows(session, lp.name, start, records, loaded=mine)
                judged.append((lp, settled, start, rounds, after))
                lp_events = _diff(lp.name, before, after)
                judged[-1] += (lp_events,)
            await store.replace_runs_many(session, [(lp.name, start, settled, runs_of(rounds, settled),
                                                     None if lp.backlog_before(settled) else settled)
                                                    for lp, settled, start, rounds, _, _ in judged])
            events = [e for *_, lp_events in judged for e in lp_events]
            if events and self.outbox is not None:
                await self.outbox(session, events)  # in the transaction of the windows behind them
            await session.commit()
        for lp, settled, _, _, after, _ in judged:
            lp.open_window = next(({"start": w.start} for w in after if w.end is None), None)
            lp.last_settled, lp.windows_known = settled, True
        return events, rest

    async def _catch_up(self, lp: LivePolicy, settled: datetime) -> None:
        """Once per policy and process: mark for judging what no collector judged while none ran
        (since the last judged round, or the first time since the first result, at most
        CATCH_UP_SPAN back), so that the runs of UNKNOWN rounds cover the time without evidence
        and no stretch is shown as up for want of a verdict. Marked stretches are judged a
        budget a tick, like a replayed backlog."""
        lp.progress_loaded = True
        async with self.sessionmaker() as session:
            done = (await store.judged_until(session, [lp.name])).get(lp.name)
            first = None if done is not None else await store.first_result_slot(session, lp.policy.components)
        if done is not None:
            since = done - lp.lookback
        elif first is not None:
            since = max(slot_of(first, lp.policy.interval), settled - CATCH_UP_SPAN)
        else:
            return
        if since < settled - lp.lookback:
            lp.mark(since, settled - lp.interval)

    async def _evaluate(self, lp: LivePolicy, now: datetime, ranges: tuple[list, datetime | None] | None = None,
                        settled: datetime | None = None) -> list[WindowEvent]:
        settled = settled or self.settled_until(lp, now)
        if ranges is None:
            if not lp.progress_loaded:
                await self._catch_up(lp, settled)
            ranges = self._ranges(lp, settled)
        closed, tail = ranges
        if not closed and tail is None:
            return []
        events: list[WindowEvent] = []
        if lp.first_slot is None:
            async with self.sessionmaker() as session:
                lp.first_slot = await store.first_result_slot(session, lp.policy.components)
        first = lp.first_slot
        if first is None:
            lp.last_settled, lp.windows_known = settled, True
            return []
        first = slot_of(first, lp.policy.interval)
        for start, end in closed:
            events.extend(await self._judge(lp, first, start, end, settled))
        if tail is not None:
            events.extend(await self._judge(lp, first, tail, settled, settled))
            lp.last_settled, lp.windows_known = settled, True
        return events

    async def _judge(self, lp: LivePolicy, first: datetime, start: datetime, end: datetime,
                     settled: datetime) -> list[WindowEvent]:
        """Judge the rounds of [start, end) again and replace the stored windows in that range.

        The range grows until no run can cross its edges: it takes in every stored window it
        touches, and extends while its first (or last) round is down (is_down). A range that reaches
        `settled` is the tail: a run there may still be going on (an open window)."""
        step = 4 * lp.lookback
        is_tail = end >= settled
        async with self.sessionmaker() as session:
            while True:
                start = max(start, first)
                for w in await store.load_windows(session, lp.name, since=start, until=None if is_tail else end):
                    start = min(start, w.start)
                    if not is_tail:
                        end = max(end, w.end if w.end is not None else settled)
                if end >= settled:
                    end, is_tail = settled, True
                rounds = await self._rounds(session, lp, start, end)
                grown = False
                if rounds and is_down(lp.policy, rounds[0].verdict) and start > first:
                    start, grown = slot_of(max(first, start - step), lp.policy.interval), True
                if not is_tail and rounds and is_down(lp.policy, rounds[-1].verdict):
                    end, grown = min(settled, end + step), True
                if not grown:
                    break
            windows = find_windows(lp.policy, rounds, open_tail=is_tail)
            records = [window_record(lp.policy, w) for w in windows]
            before, after = await store.replace_windows(session, lp.name, start, records,
                                                        until=None if is_tail else end)
            # the rollup of non-UP runs, judged again over the same range in the same transaction
            await store.replace_runs(session, lp.name, start, end, runs_of(rounds, end),
                                     judged_until=settled if is_tail and not lp.backlog_before(settled) else None)
            events = _diff(lp.name, before, after)
            if events and self.outbox is not None:
                # The notification is written in the same transaction as the window behind it.
                await self.outbox(session, events)
            await session.commit()
        if is_tail:
            lp.open_window = next(({"start": w.start} for w in after if w.end is None), None)
        return events

    async def _rounds(self, session, lp: LivePolicy, start: datetime, end: datetime) -> list[Round]:
        """Rounds of [start, end); a stretch nobody reported is one UNKNOWN round (it ends runs
        exactly as its every slot would), so a sparse history costs what it holds."""
        if end <= start:
            return []
        observations = await store.load_observations(session, lp.policy.components, start, end)
        index = ObservationIndex(lp.policy, observations, expected_by_component=lp.expected_by_component)
        return index.rounds(start, end, sparse=True)

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
