"""The collector's background jobs, each a named function with the interval it runs at.

Evaluation is shared: each evaluation shard is judged by the one replica holding its lease
(collector.shards); retention runs on one replica at a time, the holder of its lease;
the status refresh and notification delivery run on every replica (delivery claims row by row).
`run_jobs` starts them on an APScheduler scheduler and, on shutdown, waits for the running ones
before the engine is disposed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from collector.service import CollectorState

log = logging.getLogger("uptime.collector.jobs")


async def evaluate(state: CollectorState) -> None:
    """Judge the rounds that settled and the ranges late results touched, for the policies of the
    evaluation shards this collector holds (collector.shards); for the others it follows the open
    windows their holders wrote."""
    await state.reload_checks()  # checks changed through another replica's API
    now = datetime.now(timezone.utc)
    held = await state.hold_shards(now)
    mine = state.policies_of(held)
    if mine:
        with state.metrics.evaluation_seconds.time():
            await state.evaluator.scan_received(now)
            await state.holding_shards(state.evaluator.tick(now, only=mine))
    if len(mine) < len(state.policies):
        await state.evaluator.refresh_open_windows(names=set(state.policies) - mine)


async def refresh_status(state: CollectorState) -> None:
    """Agents' last contact and the month-to-date gauges and budget notifications."""
    await state.refresh_contacts()
    await state.refresh_status()


async def deliver(state: CollectorState) -> None:
    """Notifications from the outbox, each claimed by one replica."""
    await state.deliverer.run_once()


async def retention(state: CollectorState) -> None:
    """Raw results past `retention.raw` summarised per round and deleted (the lease holder): on
    PostgreSQL a month wholly past it by dropping its partition; the months ahead are created."""
    if await state.hold_lease("retention", datetime.now(timezone.utc), ttl=state.config.retention.interval * 2):
        await state.expire_raw_results()


@dataclass(frozen=True)
class Job:
    run: Callable[[CollectorState], Awaitable[None]]
    interval: Callable[[CollectorState], float]  # seconds, from the config


JOBS = (
    Job(evaluate, lambda s: s.config.evaluation.interval),
    Job(refresh_status, lambda s: s.config.evaluation.status_interval),
    Job(deliver, lambda s: 1.0),  # an outbox row waits at most a second for its first attempt
    Job(retention, lambda s: s.config.retention.interval),
)


STOP_GRACE = 20.0  # seconds a running job gets to finish at shutdown before it is cancelled


class JobRunner:
    """The jobs on a scheduler; each run is tracked so that `stop` can wait for it."""

    def __init__(self, state: CollectorState, jobs: tuple[Job, ...] = JOBS) -> None:
        self.state = state
        self.jobs = jobs
        self.scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self.running: dict[asyncio.Task, str] = {}  # task -> job name

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        for job in self.jobs:
            self.scheduler.add_job(self._tracked, "interval", args=(job,), id=job.run.__name__,
                                   seconds=job.interval(self.state), max_instances=1, coalesce=True,
                                   next_run_time=now)
        self.scheduler.start()

    async def _tracked(self, job: Job) -> None:
        task = asyncio.current_task()
        self.running[task] = job.run.__name__
        try:
            await job.run(self.state)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failing job is logged and tried again at its next run
            log.exception("periodic job %s failed", job.run.__name__)
        finally:
            self.running.pop(task, None)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop scheduling, let the running jobs finish (the evaluator stops between policies),
        and cancel only what is still running after `grace` seconds.

        Cancelling at once is what a job cannot survive cleanly: a job cancelled while its
        database driver opens a connection (aiosqlite's connect runs in a thread of its own) leaks
        that connection, and disposing of the engine then waits for it forever."""
        # paused, not shut down: APScheduler's asyncio executor cancels the running jobs when
        # it shuts down, so that comes last
        self.scheduler.pause()
        self.state.evaluator.stopping = True
        running = set(self.running)
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                log.warning("periodic job %s still running after %.0f s at shutdown: cancelled",
                            self.running.get(task, task.get_name()), grace)
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
