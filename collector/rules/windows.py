"""Outage windows from rounds (issue 3, "Outage windows").

A maximal run of consecutive FAILED rounds is an outage when n × I >= the policy's minimum
duration (0: every failed round counts). The window is [first failed slot, last failed slot + I).
An UNKNOWN or UP round, or a gap in the slots given, ends a run.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Sequence

from .model import Round, Verdict, Window
from .policy import Policy

__all__ = ["find_windows", "qualifies"]


def qualifies(policy: Policy, failed_rounds: int) -> bool:
    """n rounds cover n × I; compared in microseconds so 2 × 6 min is exactly 12 min."""
    interval_us = round(policy.interval * 1_000_000)
    return failed_rounds > 0 and failed_rounds * interval_us >= round(policy.min_duration * 1_000_000)


def find_windows(policy: Policy, rounds: Sequence[Round], *, open_tail: bool = False) -> list[Window]:
    """The outage windows in `rounds`, sorted by start.

    1. Rounds are taken in slot order; consecutive means the next slot follows at once.
    2. Each maximal run of FAILED rounds is kept when it covers at least `min_duration`.
    3. With `open_tail`, a run that reaches the last round given is still open: its end is None.
    """
    if not rounds:
        return []
    step = timedelta(seconds=policy.interval)
    ordered = list(rounds)
    if any(ordered[i].slot >= ordered[i + 1].slot for i in range(len(ordered) - 1)):
        ordered = sorted({r.slot: r for r in ordered}.values(), key=lambda r: r.slot)
    windows: list[Window] = []
    run: list[Round] = []

    def close(still_open: bool) -> None:
        if run and qualifies(policy, len(run)):
            end = None if still_open else run[-1].slot + step
            windows.append(Window(run[0].slot, end, tuple(run)))

    for rnd in ordered:
        if rnd.verdict == Verdict.FAILED:
            if run and rnd.slot != run[-1].slot + step:
                close(False)
                run = []
            run.append(rnd)
        elif run:
            close(False)
            run = []
    close(open_tail)
    return windows
