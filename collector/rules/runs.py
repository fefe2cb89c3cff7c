"""Runs of rounds that were not UP: the rollup a status page reads instead of every result.

As the evaluator settles rounds it keeps, per policy, each stretch of consecutive rounds with the
same non-UP verdict (first slot, end, verdict), as healthchecks keeps its flips: a day's figures
come from a handful of runs, not from every sample. UNKNOWN runs are what keeps a day with missing
evidence from being drawn as fully up; DEGRADED runs are what draws a day amber.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from .model import Round, Verdict

__all__ = ["Run", "runs_of"]


@dataclass(frozen=True, slots=True)
class Run:
    start: datetime   # the first slot of the run
    end: datetime     # the end of its last round
    verdict: Verdict  # FAILED, DEGRADED or UNKNOWN


def runs_of(rounds: Sequence[Round], end: datetime) -> list[Run]:
    """The non-UP runs of `rounds` (sorted by slot, as ObservationIndex gives them; with sparse
    rounds, a round lasts until the next one's slot), the last round ending at `end`."""
    runs: list[Run] = []
    start: datetime | None = None
    verdict: Verdict | None = None
    for rnd in rounds:
        if rnd.verdict is not verdict:
            if verdict is not None and verdict is not Verdict.UP and start is not None:
                runs.append(Run(start, rnd.slot, verdict))
            start, verdict = rnd.slot, rnd.verdict
    if verdict is not None and verdict is not Verdict.UP and start is not None and start < end:
        runs.append(Run(start, end, verdict))
    return runs
