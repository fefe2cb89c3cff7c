"""An overloaded agent must not vote DOWN.

A probe's timeout runs on the agent's own event loop. When that loop is late (too many probes due
at once, a long garbage collection, a starved CPU), a reply that arrived in time may be read only
after the timer fired, and the target is blamed for the agent's own queueing (measured in
bench/RESULTS.md: 3.7 % of probes at 750 probes/s were such false `timeout`s, reaching the
collector as real DOWN votes). The collector can only be as right as its evidence, and "missing
evidence is unknown, never up" has a twin: doubtful evidence of failure is missing, never down.

`LoopLag` samples how late the loop wakes up; a failed probe during which the loop was late by
more than a fraction of the probe's own timeout is not reported. Its slot stays without this
agent's result (the collector counts the agent as missing in that round, which no quorum reads as
failed), and the discard is counted and logged. Successes are always kept: a reply that made it
through a late loop is still a reply.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

# How often the loop's lateness is sampled, and how long the samples are kept (longer than any
# probe's timeout; older ones cannot matter).
SAMPLE_SECONDS = 0.05
KEEP_SECONDS = 120.0
# A failure is doubtful when the loop was late by more than this share of the probe's timeout
# (with a floor, so that millisecond timers of a healthy loop never count).
DOUBT_FRACTION = 0.2
DOUBT_FLOOR_SECONDS = 0.05


# Failures that a late loop can cause: a timer that fired before the reply was read. HTTP status,
# TLS, DNS and refused connections are answers, not timings. ICMP `icmp` is mostly "too few
# replies within the timeout" (icmp.py), so it is treated as a timing too.
TIMING_REASONS = frozenset({"timeout", "icmp"})


def doubt_threshold(timeout: float) -> float:
    return max(DOUBT_FLOOR_SECONDS, DOUBT_FRACTION * timeout)


class LoopLag:
    """How late the running event loop woke up, sampled every SAMPLE_SECONDS."""

    def __init__(self, sample: float = SAMPLE_SECONDS, keep: float = KEEP_SECONDS,
                 on_sample: Callable[[float], None] | None = None) -> None:
        self._sample = sample
        self._on_sample = on_sample
        self._keep = keep
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (woke at, lateness)
        self._due: float | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + self._sample
            await asyncio.sleep(self._sample)
            now = loop.time()
            late = max(0.0, now - self._due)
            self._samples.append((now, late))
            if self._on_sample is not None:
                self._on_sample(late)
            while self._samples and self._samples[0][0] < now - self._keep:
                self._samples.popleft()

    def worst_since(self, since: float) -> float:
        """The largest lateness the loop had since `since` (loop.time()), including a wake-up
        that is overdue right now."""
        worst = 0.0
        for woke, late in reversed(self._samples):
            if woke < since:
                break
            worst = max(worst, late)
        if self._due is not None:
            worst = max(worst, asyncio.get_running_loop().time() - self._due)
        return worst
