"""Wall-clock-aligned scheduling of checks on the agent's own asyncio timers.

A check with interval I belongs to the slots k * I since the Unix epoch (wire-protocol.md), so
agents anywhere probe the same slots and the collector can compare them. Each check is probed at
a fixed offset into its slot (`schedule.spread`): the offset comes from a SHA-256 of the check's
name alone, so every agent with the same spread probes a check at the same instant while the
agent's checks as a whole are spread over the slot instead of all starting at its first
millisecond. The probe is handed its *scheduled* time (slot + offset), from which the slot is
computed; a probe that starts late still reports the slot it was meant for.

Checks of one interval and offset form a group with one timer (loop.call_at): at 10,000 checks,
the per-job cost of a general scheduler (trigger computation, executor submission, events, a
sorted job store per check) was most of the agent's start lateness (bench/RESULTS.md), while a
group costs one timer per firing however many checks it holds.

Admission: at most `max_in_flight` probes run at once; due probes beyond that wait, first due
first. A probe that cannot start within `max_lateness` of its scheduled time, or before its slot
ends, is reported as a missed slot: starting it later would blame the target for the agent's own
queueing (agent/overload.py), and a probe started in the next slot would not be evidence of this
one.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from protocol.checks import Check
from protocol.timestamps import EPOCH

log = logging.getLogger(__name__)

# Two overlapping probes of one check are allowed (a slow probe started late can run past the next
# slot), a third is refused: that check's target is so slow the agent would only pile up work.
MAX_INSTANCES = 2
DEFAULT_MAX_IN_FLIGHT = 2000
DEFAULT_MAX_LATENESS = 1.0
# A probe must start at least this long before its slot ends: `started` goes on the wire in whole
# milliseconds and the collector refuses a start at or after the slot's end.
SLOT_END_MARGIN_US = 1000
MAX_TIMER_SECONDS = 60.0

OnMissed = Callable[[str, list[datetime]], None]  # (check name, the slots not probed)
RunSlot = Callable[..., Awaitable[None]]  # run_slot(check, scheduled=<slot + offset>)

_US = timedelta(microseconds=1)


def probe_seconds(check: Check) -> float:
    """The longest one probe of `check` may take: its timeout, or an ICMP check's pings in all."""
    worst = getattr(check, "worst_case_seconds", None)
    return worst() if callable(worst) else check.timeout


def spread_offset(name: str, window: float) -> float:
    """The check's offset into its slot, in [0, window), in whole milliseconds.

    From SHA-256 of the name with integer arithmetic only: the same on every agent, interpreter
    and platform (Python's hash() of a string is randomised per process)."""
    window_ms = max(0, round(window * 1000))
    if window_ms == 0:
        return 0.0
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return (digest * window_ms >> 64) / 1000


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _at(us: int) -> datetime:
    return EPOCH + us * _US


@dataclass
class _Group:
    """The checks of one interval and offset: due together, one timer for all of them."""

    step_us: int
    offset_us: int
    budget_us: int  # how late after its scheduled time a probe of this group may start
    checks: dict[str, Check] = field(default_factory=dict)
    next_k: int = 0  # the slot index the timer is armed for
    handle: asyncio.TimerHandle | None = None

    def scheduled_us(self, k: int) -> int:
        return k * self.step_us + self.offset_us


@dataclass
class _Waiting:
    check: Check
    slot: datetime
    scheduled: datetime
    deadline_us: int


class CheckScheduler:
    """The set of scheduled checks of one agent: add, replace, remove, by check name."""

    def __init__(self, run_slot: RunSlot, on_missed: OnMissed, *, spread=None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, max_lateness: float = DEFAULT_MAX_LATENESS):
        self._run_slot = run_slot
        self._on_missed = on_missed
        self._spread = spread  # agent.config.Spread, or None: no offsets
        self.max_in_flight = max_in_flight
        self._max_lateness_us = _us(max_lateness)
        self.checks: dict[str, Check] = {}
        self.offsets: dict[str, float] = {}
        self._groups: dict[tuple[int, int], _Group] = {}
        self._group_of: dict[str, _Group] = {}
        self._instances: collections.Counter[str] = collections.Counter()  # running or waiting, per check
        self._tasks: set[asyncio.Task] = set()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for group in self._groups.values():
            self._arm_first(group)

    @property
    def running(self) -> set[asyncio.Task]:
        """Probe tasks still running."""
        return set(self._tasks)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def shutdown(self) -> None:
        """Stop firing, cancel running probes and wait for them to unwind."""
        self._loop = None
        for group in self._groups.values():
            if group.handle is not None:
                group.handle.cancel()
                group.handle = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._waiting.clear()
        self._instances.clear()
        running = list(self._tasks)
        for task in running:
            task.cancel()
        for task in running:
            try:
                await task
            except BaseException:  # cancelled or failed: either way it is over
                pass

    # --- the set of checks -------------------------------------------------------------------

    def offset_of(self, check: Check) -> float:
        window = self._spread.window(check.interval, probe_seconds(check)) if self._spread is not None else 0.0
        return spread_offset(check.name, window)

    def add(self, check: Check) -> None:
        if check.name in self.checks:
            self.remove(check.name)
        offset = self.offset_of(check)
        step_us, offset_us = _us(check.interval), _us(offset)
        group = self._groups.get((step_us, offset_us))
        if group is None:
            # A probe may start until max_lateness after its scheduled time, and never at or past
            # its slot's end (the offset leaves at least the probe's timeout before that).
            budget_us = max(0, min(self._max_lateness_us, step_us - offset_us - SLOT_END_MARGIN_US))
            group = self._groups[(step_us, offset_us)] = _Group(step_us, offset_us, budget_us)
            if self._loop is not None:
                self._arm_first(group)
        group.checks[check.name] = check
        self._group_of[check.name] = group
        self.checks[check.name] = check
        self.offsets[check.name] = offset

    def remove(self, name: str) -> Check | None:
        """Stop scheduling a check (a probe already running finishes and reports; one still
        waiting for admission is dropped)."""
        check = self.checks.pop(name, None)
        if check is None:
            return None
        self.offsets.pop(name, None)
        group = self._group_of.pop(name)
        group.checks.pop(name, None)
        if not group.checks:
            if group.handle is not None:
                group.handle.cancel()
            del self._groups[(group.step_us, group.offset_us)]
        return check

    def next_fire_time(self, name: str) -> datetime | None:
        group = self._group_of.get(name)
        return _at(group.scheduled_us(group.next_k)) if group is not None else None

    # --- timers ------------------------------------------------------------------------------

    def _arm_first(self, group: _Group) -> None:
        # the first slot whose scheduled time is still ahead: a new check starts at its next slot
        group.next_k = (time.time_ns() // 1000 - group.offset_us) // group.step_us + 1
        self._arm(group)

    def _arm(self, group: _Group) -> None:
        loop = self._loop
        if loop is None:
            return
        delay = group.scheduled_us(group.next_k) / 1e6 - time.time()
        # loop.time() is monotonic, the slots are wall-clock: converted at every arming, and never
        # armed further than MAX_TIMER_SECONDS ahead, so that a wall clock stepped back is noticed
        # (_fire re-arms for the slot that is next by then) instead of waiting out the step
        delay = min(max(0.0, delay), MAX_TIMER_SECONDS)
        group.handle = loop.call_at(loop.time() + delay, self._fire, group)

    def _fire(self, group: _Group) -> None:
        group.handle = None
        if self._loop is None or self._groups.get((group.step_us, group.offset_us)) is not group:
            return
        now_us = time.time_ns() // 1000
        if now_us < group.scheduled_us(group.next_k):
            # early: a hair (timer resolution), a capped long wait, or the wall clock went back
            group.next_k = min(group.next_k, (now_us - group.offset_us) // group.step_us + 1)
            self._arm(group)
            return
        # every slot due since the timer was armed: after a stall, more than one
        last_k = (now_us - group.offset_us) // group.step_us
        first_k = group.next_k
        group.next_k = last_k + 1
        self._arm(group)
        last_scheduled = group.scheduled_us(last_k)
        fresh = now_us - last_scheduled <= group.budget_us
        stale = [_at(k * group.step_us) for k in range(first_k, last_k if fresh else last_k + 1)]
        slot, scheduled = _at(last_k * group.step_us), _at(last_scheduled)
        deadline_us = last_scheduled + group.budget_us
        for name, check in list(group.checks.items()):
            if stale:  # one report per stall, however many slots it swallowed
                self._on_missed(name, stale)
            if fresh:
                self._admit(check, slot, scheduled, deadline_us)

    # --- admission ---------------------------------------------------------------------------

    def _admit(self, check: Check, slot: datetime, scheduled: datetime, deadline_us: int) -> None:
        if self._instances[check.name] >= MAX_INSTANCES:
            self._on_missed(check.name, [slot])  # its earlier probes are still running
            return
        if not self._waiting and len(self._tasks) < self.max_in_flight:
            self._start(check, slot, scheduled, deadline_us)
            return
        self._instances[check.name] += 1
        self._waiting.append(_Waiting(check, slot, scheduled, deadline_us))
        if self._sweeper is None:
            self._arm_sweeper()

    def _start(self, check: Check, slot: datetime, scheduled: datetime, deadline_us: int) -> None:
        assert self._loop is not None
        self._instances[check.name] += 1
        task = self._loop.create_task(self._run(check, slot, scheduled, deadline_us), name=f"probe-{check.name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t, name=check.name: self._done(t, name))

    async def _run(self, check: Check, slot: datetime, scheduled: datetime, deadline_us: int) -> None:
        # Judged again when the task first runs: a burst of thousands of due probes is admitted at
        # once, but the last task of it only runs after all the others' first steps (each sets up
        # its connection), which can take longer than the budget.
        if time.time_ns() // 1000 > deadline_us:
            self._on_missed(check.name, [slot])
            return
        await self._run_slot(check, scheduled=scheduled)

    def _done(self, task: asyncio.Task, name: str) -> None:
        self._tasks.discard(task)
        self._release(name)
        if not task.cancelled() and task.exception() is not None:
            log.error("probe of %s failed", name, exc_info=task.exception())
        if self._loop is not None:
            self._drain()

    def _release(self, name: str) -> None:
        self._instances[name] -= 1
        if self._instances[name] <= 0:
            del self._instances[name]

    def _drain(self) -> None:
        """Start waiting probes while there is room; report those that waited too long."""
        now_us = time.time_ns() // 1000
        while self._waiting and len(self._tasks) < self.max_in_flight:
            entry = self._waiting.popleft()
            self._release(entry.check.name)
            if self.checks.get(entry.check.name) is not entry.check:
                continue  # removed or replaced while it waited
            if now_us > entry.deadline_us:
                self._on_missed(entry.check.name, [entry.slot])
                continue
            self._start(entry.check, entry.slot, entry.scheduled, entry.deadline_us)

    def _arm_sweeper(self) -> None:
        """A timer at the first waiting probe's deadline, so that a slot that cannot be probed
        is reported when it is lost, not whenever a running probe ends."""
        self._sweeper = None
        if not self._waiting or self._loop is None:
            return
        delay = self._waiting[0].deadline_us / 1e6 - time.time()
        self._sweeper = self._loop.call_at(self._loop.time() + max(0.0, delay) + 0.001, self._sweep)

    def _sweep(self) -> None:
        now_us = time.time_ns() // 1000
        while self._waiting and self._waiting[0].deadline_us < now_us:
            entry = self._waiting.popleft()
            self._release(entry.check.name)
            if self.checks.get(entry.check.name) is entry.check:
                self._on_missed(entry.check.name, [entry.slot])
        self._arm_sweeper()


def aligned_fire_times(interval: float, after: datetime, count: int) -> list[datetime]:
    """The next `count` aligned slots strictly after `after` (for check-config and tests)."""
    step = timedelta(seconds=interval)
    k = int((after - EPOCH) / step) + 1
    return [EPOCH + step * (k + i) for i in range(count)]


def misfire_grace(interval: float) -> int:
    """The grace of the former APScheduler scheduler, kept for its callers: half an interval,
    at least a second, in whole seconds. The agent's own limit is `schedule.max_lateness`."""
    return math.ceil(max(1.0, interval * 0.5))
