"""Durations as written in policies: "250ms", "5s", "2m", "1h", "1d" or a bare number of seconds.

The agent's parser is reused when it is importable, so that a policy and an agent config read
"5m" the same way; the fallback below keeps the rules core usable on its own.
"""
from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def _parse_duration(value: object) -> float:
    """Return seconds (>= 0) for "250ms", "5s", "2m", "1h", "1d", 5 or 0.25; raise ValueError."""
    if isinstance(value, bool):  # YAML `yes` is a bool, and bool is an int: refuse it explicitly
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r}")
        number, unit = match.groups()
        seconds = float(number) * _UNITS[unit or "s"]
    else:
        raise ValueError(f"invalid duration {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}")
    return seconds


try:  # one parser for the whole project when the agent package is present
    from agent.durations import parse_duration as _agent_parse_duration
except ImportError:  # pragma: no cover - the rules core also works without the agent package
    _agent_parse_duration = None


def parse_duration(value: object) -> float:
    """Seconds for "250ms", "5s", "2m", "1h", "1d" or a number of seconds; ValueError otherwise."""
    if _agent_parse_duration is not None:
        seconds = _agent_parse_duration(value)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            return float(seconds)
    return _parse_duration(value)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 900 -> "15m", 172800 -> "2d", 0.25 -> "250ms"."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    millis = seconds * 1000
    if abs(millis - round(millis)) < 1e-6:
        return f"{int(round(millis))}ms"
    return f"{seconds:g}s"
