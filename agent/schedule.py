"""Wall-clock-aligned scheduling of checks on APScheduler 3's AsyncIOScheduler.

A check with interval I fires at every multiple of I since the Unix epoch (wire-protocol.md:
slot = k * interval since epoch), so agents anywhere probe the same slots and the collector can
compare them. The job receives the *scheduled* fire time, from which the slot is computed; a job
that starts late still reports the slot it was meant for.

APScheduler's own `jitter` is not used: its IntervalTrigger adds the jitter to the fire time and
computes the next fire time from that, so the schedule drifts off the aligned grid. Instead the
job sleeps a random 0..jitter after its aligned fire time.
"""
from __future__ import annotations

import logging
import math
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from protocol.checks import Check
from protocol.timestamps import EPOCH

# Two overlapping probes of one check are allowed (jitter + a slow probe can run past the next
# slot), a third is refused: that check's target is so slow the agent would only pile up work.
MAX_INSTANCES = 2
# A slot is still worth probing until half an interval has passed (with a 1 s floor for event-loop
# hiccups on short intervals); later, the probe would be read as belonging to the next slot.
MISFIRE_FRACTION = 0.5
MISFIRE_FLOOR_SECONDS = 1.0


OnMissed = Callable[[str, list[datetime]], None]  # (check name, the slots not probed)

# APScheduler logs every job added and run at INFO; the agent logs what matters itself, so its
# scheduler logs to a logger of ours that passes on warnings only.
_SCHEDULER_LOG = logging.getLogger("agent.schedule.apscheduler")
_SCHEDULER_LOG.setLevel(logging.WARNING)


def misfire_grace(interval: float) -> int:
    # APScheduler 3 takes whole seconds only.
    return math.ceil(max(MISFIRE_FLOOR_SECONDS, interval * MISFIRE_FRACTION))


class SlotExecutor(AsyncIOExecutor):
    """AsyncIOExecutor that hands each job its scheduled fire time, and reports missed slots.

    Mirrors apscheduler.executors.base.run_coroutine_job, which does not pass the fire time on.
    """

    def __init__(self, on_missed: OnMissed):
        super().__init__()
        self._on_missed = on_missed

    def _do_submit_job(self, job, run_times):
        def done(task):
            self._pending_futures.discard(task)
            try:
                events = task.result()
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        task = self._eventloop.create_task(self._run(job, run_times), name=f"probe-{job.id}")
        task.add_done_callback(done)
        self._pending_futures.add(task)

    async def _run(self, job, run_times):
        """Probe the latest due slot that is still within the grace time; every other due slot
        (the scheduler hands over all of them after a stall) is reported as missed."""
        now = datetime.now(timezone.utc)
        fresh = [t for t in run_times if (now - t).total_seconds() <= job.misfire_grace_time]
        missed = [t for t in run_times if not fresh or t != fresh[-1]]
        events = [JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, t) for t in missed]
        if missed:  # one report per stall, however many slots it swallowed
            self._on_missed(job.id, missed)
        if fresh:
            retval = await job.func(*job.args, scheduled=fresh[-1], **job.kwargs)
            events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, fresh[-1], retval=retval))
        return events

    @property
    def running(self) -> set:
        """Probe tasks still running (none before the scheduler has started this executor)."""
        return set(getattr(self, "_pending_futures", ()))


class CheckScheduler:
    """The set of scheduled checks of one agent: add, replace, remove, by check name."""

    def __init__(self, run_slot: Callable[..., Awaitable[None]], on_missed: OnMissed):
        self._run_slot = run_slot
        self._executor = SlotExecutor(on_missed)
        self._scheduler = AsyncIOScheduler(
            logger=_SCHEDULER_LOG,
            timezone=timezone.utc,
            executors={"default": self._executor},
            job_defaults={
                # Not coalesced by the scheduler, which would drop the stale slots unseen: the
                # executor gets them all, probes the latest valid one and reports the others.
                "coalesce": False,
                "max_instances": MAX_INSTANCES,
            },
        )
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self._on_missed = on_missed
        self.checks: dict[str, Check] = {}

    def start(self) -> None:
        self._scheduler.start()

    def _skipped(self, event) -> None:
        """A slot not probed because MAX_INSTANCES probes of the check are still running."""
        self._on_missed(event.job_id, list(event.scheduled_run_times))

    async def shutdown(self) -> None:
        """Stop firing, cancel running probes and wait for them to unwind."""
        running = self._executor.running
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in running:
            task.cancel()
        for task in running:
            try:
                await task
            except BaseException:  # cancelled or failed: either way it is over
                pass

    def add(self, check: Check) -> None:
        trigger = IntervalTrigger(
            seconds=check.interval,
            start_date=EPOCH,  # fire times are EPOCH + k * interval: the aligned slots
            timezone=timezone.utc,
        )
        self._scheduler.add_job(
            self._run_slot,
            trigger=trigger,
            args=[check],
            id=check.name,
            name=f"check {check.name}",
            misfire_grace_time=misfire_grace(check.interval),
            replace_existing=True,
        )
        self.checks[check.name] = check

    def remove(self, name: str) -> Check | None:
        """Stop scheduling a check (a probe already running finishes and reports)."""
        check = self.checks.pop(name, None)
        if check is not None:
            self._scheduler.remove_job(name)
        return check

    def next_fire_time(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        return job.next_run_time if job else None


def aligned_fire_times(interval: float, after: datetime, count: int) -> list[datetime]:
    """The next `count` aligned slots strictly after `after` (for check-config and tests)."""
    step = timedelta(seconds=interval)
    k = int((after - EPOCH) / step) + 1
    return [EPOCH + step * (k + i) for i in range(count)]
