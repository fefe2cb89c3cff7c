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
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe result: `ts` is the scheduled time (UTC); it decides the slot."""
    agent: str
    check: str
    ts: datetime
    ok: bool


@dataclass(frozen=True, slots=True)
class ComponentRound:
    """One component's verdict in one slot, with the agents behind it (the evidence)."""
    component: str
    verdict: Verdict
    failed: tuple[str, ...]
    succeeded: tuple[str, ...]
    missing: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.value, "failed": list(self.failed),
                "succeeded": list(self.succeeded), "missing": list(self.missing)}


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
    """A maintenance announcement: kind (one the policy accepts), when announced, [start, end)."""
    kind: str
    announced: datetime
    start: datetime
    end: datetime
    note: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "announced": iso(self.announced), "start": iso(self.start),
                "end": iso(self.end), "note": self.note}
