"""The evaluation core's value types: observations in, rounds, windows and announcements out.

All datetimes here are timezone-aware UTC. Local time (zoneinfo) appears only where a contract
speaks in it: period boundaries, maintenance windows, calendar and business days.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from fractions import Fraction

__all__ = [
    "Verdict", "Observation", "ComponentRound", "Round", "Window", "Announcement",
    "iso", "minutes_between", "number", "paused_gc",
]

UTC = timezone.utc
_US = timedelta(microseconds=1)
_US_PER_MINUTE = 60_000_000


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` suffix ("2026-10-01T05:00:00Z"); None stays None."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def minutes_between(start: datetime, end: datetime) -> Fraction:
    """Exact minutes from start to end (0 when end <= start), computed on UTC instants."""
    if end <= start:
        return Fraction(0)
    return Fraction((end - start) // _US, _US_PER_MINUTE)


def number(value: Fraction | float | int | None) -> int | float | None:
    """A JSON number: an int when the value is whole (43200), else a float (12.5)."""
    if value is None:
        return None
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return int(value)
        return round(float(value), 6)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector while building many small acyclic objects (a month of
    results): its repeated full passes over them would cost as much as the work itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Verdict(str, Enum):
    UP = "up"
    # up, but the quorum of reporting agents saw it slower than the check's degraded_after: between
    # UP and FAILED, counted as down only where the policy says so (degraded_counts_as_down)
    DEGRADED = "degraded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe result: `ts` is the scheduled time (UTC); it decides the slot. `degraded`: ok,
    but slower than the check's degraded_after (meaningless when not ok)."""
    agent: str
    check: str
    ts: datetime
    ok: bool
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class ComponentRound:
    """One component's verdict in one slot, with the agents behind it (the evidence). `degraded`
    are the agents of `succeeded` whose success was degraded."""
    component: str
    verdict: Verdict
    failed: tuple[str, ...]
    succeeded: tuple[str, ...]
    missing: tuple[str, ...]
    degraded: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {"verdict": self.verdict.value, "failed": list(self.failed),
               "succeeded": list(self.succeeded), "missing": list(self.missing)}
        if self.degraded:  # only then: the evidence of rounds without degraded agents stays as it was
            out["degraded"] = list(self.degraded)
        return out


@dataclass(frozen=True, slots=True)
class Round:
    """The service's verdict in one slot [slot, slot + interval), composed from its components."""
    slot: datetime
    verdict: Verdict
    components: tuple[ComponentRound, ...]

    def to_dict(self) -> dict:
        return {"slot": iso(self.slot), "verdict": self.verdict.value,
                "components": {c.component: c.to_dict() for c in self.components}}


@dataclass(frozen=True, slots=True)
class Window:
    """A verified outage: [first failed slot, last failed slot + interval); end None = still open."""
    start: datetime
    end: datetime | None
    rounds: tuple[Round, ...]

    @property
    def minutes(self) -> float | None:
        """Length in minutes, or None while the window is open (see minutes_until)."""
        if self.end is None:
            return None
        return float(minutes_between(self.start, self.end))

    def minutes_until(self, until: datetime) -> float:
        """Length in minutes, counting an open window up to `until`."""
        end = self.end if self.end is not None else until
        return float(minutes_between(self.start, end))

    def to_dict(self, until: datetime | None = None) -> dict:
        minutes = self.minutes if self.end is not None or until is None else self.minutes_until(until)
        return {"start": iso(self.start), "end": iso(self.end), "minutes": number(minutes),
                "evidence": [r.to_dict() for r in self.rounds]}


@dataclass(frozen=True)
class Announcement:
    """A maintenance announcement: kind (one the policy accepts), [start, end), and its notice.

    `recorded_at` is when the collector recorded it, by its own clock: notice is judged from it.
    `announced` is the time the operator states it was announced (an email sent before it was
    recorded), None when none was stated; it counts only under `trust_stated_notice`. An offline
    record without `recorded_at` (the operator's own file) is taken as recorded when it says it
    was announced. A cancelled announcement (`cancelled_at`) excludes nothing."""
    kind: str
    announced: datetime | None
    start: datetime
    end: datetime
    note: str = ""
    recorded_at: datetime | None = None
    recorded_by: str = ""
    author: str = ""
    cancelled_at: datetime | None = None
    cancel_reason: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        if self.recorded_at is None and self.announced is None:
            raise ValueError(f"maintenance {self.kind} starting {iso(self.start)} has neither recorded_at nor announced")

    @property
    def recorded(self) -> datetime:
        """When it was recorded: `recorded_at`, or for an offline record without one, `announced`."""
        return self.recorded_at if self.recorded_at is not None else self.announced  # type: ignore[return-value]

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "start": iso(self.start), "end": iso(self.end), "note": self.note,
               "recorded_at": iso(self.recorded), "stated_announced": iso(self.announced)}
        if self.recorded_at is None:
            out["recorded_at_from"] = "announced"   # an offline record: its own `announced` is taken as recorded
        if self.id is not None:
            out["id"] = self.id
        if self.recorded_by:
            out["recorded_by"] = self.recorded_by
        if self.author:
            out["author"] = self.author
        if self.cancelled_at is not None:
            out["cancelled_at"], out["cancel_reason"] = iso(self.cancelled_at), self.cancel_reason
        return out
