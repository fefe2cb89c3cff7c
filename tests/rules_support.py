"""Builders shared by the contract-rules tests (tests/test_rules_*.py)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from collector.rules.model import Observation

UTC = timezone.utc
SIX = ("ams", "fra", "iad", "nrt", "sin", "syd")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def series(check: str, start: datetime, end: datetime, *, interval: float = 60, agents=SIX,
           ok: Callable[[str, datetime], bool | None] | bool = True) -> list[Observation]:
    """One observation per agent per slot in [start, end); `ok(agent, slot)` None = no report."""
    out = []
    t = start
    step = timedelta(seconds=interval)
    while t < end:
        for agent in agents:
            verdict = ok(agent, t) if callable(ok) else ok
            if verdict is not None:
                out.append(Observation(agent, check, t, verdict))
        t += step
    return out


def failing(check: str, start: datetime, minutes: float, *, interval: float = 60, agents=SIX) -> list[Observation]:
    """Every agent reports failure in every slot of [start, start + minutes)."""
    return series(check, start, start + timedelta(minutes=minutes), interval=interval, agents=agents, ok=False)


def between(start: datetime, end: datetime) -> Callable[[datetime], bool]:
    return lambda t: start <= t < end


def jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows_of(observations: Iterable[Observation]) -> list[dict]:
    return [{"agent": o.agent, "check": o.check, "ts": o.ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": o.ok}
            for o in observations]
