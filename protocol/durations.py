"""Durations and sizes as written in YAML configs (wire-protocol.md: "Durations in YAML configs
accept `250ms`, `5s`, `2m`, `1h`, `1d` or a bare number of seconds").

Pure functions with no project imports, so the collector can use the same parser.
"""
from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration", "parse_size", "format_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")

# Sizes are binary: "512MB" is 512 MiB, the reading most operators expect from a disk bound.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1024, "kib": 1024, "k": 1024,
    "mb": 1024**2, "mib": 1024**2, "m": 1024**2,
    "gb": 1024**3, "gib": 1024**3, "g": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
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
        seconds = float(number) * _DURATION_UNITS[unit or "s"]
    else:
        raise ValueError(f"invalid duration {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of `seconds` in the config syntax: 0.25 -> "250ms", 120 -> "2m"."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    millis = seconds * 1000
    if abs(millis - round(millis)) < 1e-6:
        return f"{int(round(millis))}ms"
    return f"{seconds:g}s"


def parse_size(value: object) -> int:
    """Return bytes for "512MB", "64KiB", "1GB", "100B" or a bare number of bytes; raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r} (use a number of bytes or KB, MB, GB)")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"invalid size {value!r}")
    if size < 0:
        raise ValueError(f"invalid size {value!r}")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
