"""Shutdown lets running background jobs finish instead of cancelling them mid-step (a job
cancelled while its database driver opens a connection leaks that connection, and disposing of
the engine then waits for it), and cancels only a job that overruns the grace period."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from collector.jobs import Job, JobRunner


def _state():
    return SimpleNamespace(evaluator=SimpleNamespace(stopping=False))


async def test_stop_waits_for_a_running_job_to_finish():
    started, seen = asyncio.Event(), []

    async def slow(state):
        started.set()
        await asyncio.sleep(0.3)
        seen.append(("finished", state.evaluator.stopping))

    state = _state()
    runner = JobRunner(state, jobs=(Job(slow, lambda s: 3600),))
    runner.start()
    await asyncio.wait_for(started.wait(), 10)
    await runner.stop(grace=30)
    # it ran to its end, and saw the stop signal the evaluator uses to end its tick early
    assert seen == [("finished", True)]
    assert runner.running == {}


async def test_stop_cancels_a_job_that_overruns_the_grace_period():
    started, outcome = asyncio.Event(), []

    async def stuck(state):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    runner = JobRunner(_state(), jobs=(Job(stuck, lambda s: 3600),))
    runner.start()
    await asyncio.wait_for(started.wait(), 10)
    await runner.stop(grace=0.2)
    assert outcome == ["cancelled"]
    assert runner.running == {}
