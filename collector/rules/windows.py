"""Outage windows from rounds (issue 3, "Outage windows").

A maximal run of consecutive FAILED rounds is an outage when n × I >= the policy's minimum
duration (0: every failed round counts). The window is [first failed slot, last failed slot + I).
An UNKNOWN or UP round, or a gap in the slots given, ends a run. A DEGRADED round counts as FAILED
only under a policy with `degraded_counts_as_down` (a contract whose downtime includes service
that "does not meet the defined operating criteria", Numezis SaaS SLA §1); otherwise it is up
for outages, and ends a run.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Sequence

from .model import Round, Verdict, Window
from .policy import Policy

__all__ = ["find_windows", "qualifies", "is_down"]


def is_down(policy: Policy, verdict: Verdict) -> bool:
    """Whether a round with this verdict counts towards an outage under the policy."""
    return verdict is Verdict.FAILED or (verdict is Verdict.DEGRADED and policy.degraded_counts_as_down)


def qualifies(policy: Policy, failed_rounds: int) -> bool:
    """n rounds cover n × I; compared in microseconds so 2 × 6 min is exactly 12 min."""
    interval_us = round(policy.interval * 1_000_000)
    return failed_rounds > 0 and failed_rounds * interval_us >= round(policy.min_duration * 1_000_000)


def find_windows(policy: Policy, rounds: Sequence[Round], *, open_tail: bool = False) -> list[Window]:
    """The outage windows in `rounds`, sorted by start.

    1. Rounds are taken in slot order; consecutive means the next slot follows at once.
    2. Each maximal run of FAILED rounds (and DEGRADED ones where they count as down, is_down)
       is kept when it covers at least `min_duration`.
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
        if is_down(policy, rnd.verdict):
            if run and rnd.slot != run[-1].slot + step:
                close(False)
                run = []
            run.append(rnd)
        elif run:
            close(False)
            run = []
    close(open_tail)
    return windows
