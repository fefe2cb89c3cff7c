"""Rounds: per slot, each agent's verdict, each component's verdict by quorum, and the service's
verdict by composition (issue 3, "Rounds", "Round verdict per component", "Composition").

Slots are k·I since the Unix epoch; a result belongs to the slot its scheduled time falls in, so an
agent that starts a few seconds late still lands in its slot. An agent's verdict in a slot is
success when any of its attempts there succeeded (a success that met the check's degraded_after
beats a degraded one). A slot with no reports is UNKNOWN, never UP.

DEGRADED: a component round that the quorum makes UP is DEGRADED when the same quorum rule, with
the degraded agents counted as the failing ones, would make it FAILED. An agent that failed saw
the service no better than degraded, so it counts among them too: in mode `all` a round is
DEGRADED when every expected agent reported and none had a clean success. A round whose degraded
quorum is undecided (UNKNOWN) stays UP: its UP verdict rests on evidence.
"""
from __future__ import annotations

from bisect import bisect_left

from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from .model import ComponentRound, Observation, Round, Verdict, paused_gc
from .policy import Policy

__all__ = ["slot_of", "evaluate_rounds", "ObservationIndex", "component_verdict", "degraded_verdict", "compose"]

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
ANONYMOUS = "?"  # a missing agent when the policy only counts its expected agents

_UP, _DEGRADED, _FAILED, _UNKNOWN = Verdict.UP, Verdict.DEGRADED, Verdict.FAILED, Verdict.UNKNOWN
# An agent's report in a slot, as one number so that the best attempt is the largest.
_FAIL, _SLOW, _OK = 0, 1, 2
# Known verdicts from worst to best (composition takes the worst or the best of them).
_RANK = {_FAILED: 0, _DEGRADED: 1, _UP: 2}


def _interval_us(interval_s: float) -> int:
    us = round(interval_s * 1_000_000)
    if us <= 0:
        raise ValueError(f"interval {interval_s!r} s is not positive")
    return us


def _to_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no UTC offset")
    return (ts - EPOCH) // _US


def _from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def slot_of(ts: datetime, interval_s: float) -> datetime:
    """The slot `ts` falls in: floor(ts / I) · I since the Unix epoch, in exact microseconds."""
    iu = _interval_us(interval_s)
    us = _to_us(ts)
    return _from_us(us - us % iu)


def component_verdict(mode: str, failed: int, succeeded: int, missing: int, *,
                      min_reporting: int = 1, k: int | None = None) -> Verdict:
    """A component's verdict in one slot from counts of agents that failed, succeeded, are missing.

    `all`: FAILED when every expected agent reported failure, UP when any succeeded.
    `majority`: UNKNOWN below `min_reporting` reports, else FAILED when more than half failed.
    `k_of_n`: FAILED when at least k failed, UP when even the missing could not make k.
    No reports at all is UNKNOWN in every mode.
    """
    reporting = failed + succeeded
    if reporting == 0:
        return _UNKNOWN
    if mode == "all":
        if succeeded:
            return _UP
        return _FAILED if missing == 0 else _UNKNOWN
    if mode == "majority":
        if reporting < min_reporting:
            return _UNKNOWN
        return _FAILED if 2 * failed > reporting else _UP
    if mode == "k_of_n":
        if failed >= k:
            return _FAILED
        return _UP if failed + missing < k else _UNKNOWN
    raise ValueError(f"unknown quorum mode {mode!r}")


def degraded_verdict(mode: str, verdict: Verdict, failed: int, degraded: int, succeeded: int, missing: int, *,
                     min_reporting: int = 1, k: int | None = None) -> Verdict:
    """DEGRADED for a component round the quorum made UP when the same quorum rule, counting the
    agents that were degraded or failed as failing (`succeeded` includes the degraded), makes it
    FAILED; otherwise `verdict` unchanged."""
    if verdict is not _UP or not degraded:
        return verdict
    again = component_verdict(mode, failed + degraded, succeeded - degraded, missing, min_reporting=min_reporting, k=k)
    return _DEGRADED if again is _FAILED else verdict


def compose(mode: str, verdicts: Sequence[Verdict]) -> Verdict:
    """The service's verdict from its components', on the order FAILED < DEGRADED < UP.

    `any` (the service needs every component): the worst; FAILED as soon as one component
    FAILED, else UNKNOWN while a component is UNKNOWN. `all` (one component is enough): the best;
    UP as soon as one component is UP, else UNKNOWN while a component is UNKNOWN."""
    known = [v for v in verdicts if v is not _UNKNOWN]
    if mode == "any":
        if _FAILED in known:
            return _FAILED
        if len(known) < len(verdicts) or not known:
            return _UNKNOWN
        return min(known, key=_RANK.__getitem__)
    if _UP in known:
        return _UP
    if len(known) < len(verdicts) or not known:
        return _UNKNOWN
    return max(known, key=_RANK.__getitem__)


def _group(observations: Iterable[Observation], components: tuple[str, ...], iu: int):
    """One pass: {(component, slot_us): {agent: report}} (_FAIL, _SLOW or _OK: an agent's best
    attempt in a slot wins), the agents seen per component, and the first and last slot with any
    report."""
    wanted = set(components)
    by_key: dict[tuple[str, int], dict[str, int]] = {}
    seen: dict[str, set[str]] = {c: set() for c in components}
    slot_cache: dict[datetime, int] = {}
    get_slot = slot_cache.get
    get_group = by_key.get
    for obs in observations:
        comp = obs.check
        if comp not in wanted:
            continue
        ts = obs.ts
        slot = get_slot(ts)
        if slot is None:
            us = _to_us(ts)
            slot = slot_cache[ts] = us - us % iu
        key = (comp, slot)
        report = (_SLOW if obs.degraded else _OK) if obs.ok else _FAIL
        group = get_group(key)
        if group is None:
            by_key[key] = {obs.agent: report}
        elif group.get(obs.agent, -1) < report:
            group[obs.agent] = report
    for (comp, _slot), group in by_key.items():
        seen[comp].update(group)
    slots = [slot for _comp, slot in by_key]
    return by_key, seen, (min(slots) if slots else None), (max(slots) if slots else None)


class ObservationIndex:
    """Observations grouped once by (component, slot) -> {agent: report}, so that rounds can be
    evaluated over any range without another pass over the results.

    Expected agents per component, first that applies: `expected_by_component` (the live
    collector's assignments), `quorum.agents`, `quorum.expected_agents` as a count (missing agents
    are then anonymous "?"), else the agents seen reporting that component in these observations.
    Only the policy's components count; agents outside an explicit expected list are ignored.
    """

    def __init__(self, policy: Policy, observations: Iterable[Observation], *,
                 expected_by_component: dict[str, list[str]] | None = None):
        self.policy = policy
        self.interval_us = iu = _interval_us(policy.interval)
        components = tuple(policy.components)
        self.components = components
        with paused_gc():
            self._groups, seen, self.first_slot_us, self.last_slot_us = _group(observations, components, iu)

        quorum = policy.quorum
        self._expected: dict[str, tuple[str, ...] | int] = {}
        for comp in components:
            if expected_by_component is not None and comp in expected_by_component:
                self._expected[comp] = tuple(sorted(set(expected_by_component[comp])))
            elif quorum.agents is not None:
                self._expected[comp] = tuple(sorted(quorum.agents))
            elif quorum.expected_agents is not None:
                self._expected[comp] = quorum.expected_agents
            else:
                self._expected[comp] = tuple(sorted(seen[comp]))
        self._empty = {comp: self._component_round(comp, None) for comp in components}
        self._data_slots = sorted({slot for _comp, slot in self._groups})

    @property
    def first_slot(self) -> datetime | None:
        return None if self.first_slot_us is None else _from_us(self.first_slot_us)

    @property
    def last_slot(self) -> datetime | None:
        return None if self.last_slot_us is None else _from_us(self.last_slot_us)

    def _component_round(self, comp: str, reports: dict[str, int] | None) -> ComponentRound:
        quorum = self.policy.quorum
        expected = self._expected[comp]
        if isinstance(expected, int):
            reports = reports or {}
            failed = tuple(sorted(a for a, r in reports.items() if r == _FAIL))
            succeeded = tuple(sorted(a for a, r in reports.items() if r != _FAIL))
            degraded = tuple(sorted(a for a, r in reports.items() if r == _SLOW))
            missing = (ANONYMOUS,) * max(0, expected - len(reports))
        elif not reports:
            failed = succeeded = degraded = ()
            missing = expected
        else:
            failed, succeeded, degraded, missing = [], [], [], []
            for agent in expected:  # sorted, so the evidence lists are sorted too
                report = reports.get(agent)
                if report is None:
                    missing.append(agent)
                elif report == _FAIL:
                    failed.append(agent)
                else:
                    succeeded.append(agent)
                    if report == _SLOW:
                        degraded.append(agent)
            failed, succeeded, degraded, missing = tuple(failed), tuple(succeeded), tuple(degraded), tuple(missing)
        verdict = component_verdict(quorum.mode, len(failed), len(succeeded), len(missing),
                                    min_reporting=quorum.min_reporting, k=quorum.k)
        verdict = degraded_verdict(quorum.mode, verdict, len(failed), len(degraded), len(succeeded), len(missing),
                                   min_reporting=quorum.min_reporting, k=quorum.k)
        return ComponentRound(comp, verdict, failed, succeeded, missing, degraded)

    def rounds_us(self, start_us: int, end_us: int, *, sparse: bool = False) -> list[Round]:
        """Rounds for every slot that overlaps [start_us, end_us) (microseconds since the epoch);
        with `sparse`, a stretch of slots nobody reported is one UNKNOWN round (see _fill)."""
        iu = self.interval_us
        cache: dict[tuple, ComponentRound] = {}
        out: list[Round] = []
        append = out.append
        first = start_us - start_us % iu
        with paused_gc():
            self._fill(first, end_us, cache, append, sparse)
        return out

    def _fill(self, first: int, end_us: int, cache: dict, append, sparse: bool) -> None:
        """Rounds from `first` to `end_us`. A stretch of slots nobody reported is given as ONE
        UNKNOWN round at its start: it breaks runs exactly as every slot of it would, and reports
        count the slots they expected but were not given as UNKNOWN too. A month of 2-second
        slots with an hour of data is then an hour of rounds, not 1.3 million."""
        iu = self.interval_us
        components = self.components
        groups = self._groups
        empty = self._empty
        mode = self.policy.compose
        single = len(components) == 1
        data = self._data_slots
        i = bisect_left(data, first)
        slot = first
        while slot < end_us:
            if i < len(data) and data[i] == slot:
                i += 1
                parts = []
                for comp in components:
                    reports = groups.get((comp, slot))
                    if reports is None:
                        parts.append(empty[comp])
                        continue
                    # rounds with the same reports share one ComponentRound (most rounds look alike)
                    key = (comp, *reports.items())
                    part = cache.get(key)
                    if part is None:
                        part = cache[key] = self._component_round(comp, reports)
                    parts.append(part)
                verdict = parts[0].verdict if single else compose(mode, [p.verdict for p in parts])
                append(Round(_from_us(slot), verdict, tuple(parts)))
                slot += iu
            else:
                parts = tuple(empty[comp] for comp in components)
                verdict = parts[0].verdict if single else compose(mode, [p.verdict for p in parts])
                append(Round(_from_us(slot), verdict, parts))
                if sparse:
                    slot = data[i] if i < len(data) and data[i] < end_us else end_us
                else:
                    slot += iu

    def rounds(self, start: datetime, end: datetime, *, sparse: bool = False) -> list[Round]:
        return self.rounds_us(_to_us(start), _to_us(end), sparse=sparse)


def evaluate_rounds(policy: Policy, observations: Iterable[Observation], start: datetime, end: datetime, *,
                    expected_by_component: dict[str, list[str]] | None = None) -> list[Round]:
    """A Round for every slot overlapping [start, end), UNKNOWN where nobody reported."""
    index = ObservationIndex(policy, observations, expected_by_component=expected_by_component)
    return index.rounds(start, end)
