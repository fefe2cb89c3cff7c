"""Half-open UTC intervals [start, end): merging, clipping and overlap, for exclusions."""
from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Iterable

from .model import minutes_between

__all__ = ["Interval", "merge", "clip", "intersect", "overlap_minutes", "subtract"]

Interval = tuple[datetime, datetime]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty intervals covering the same instants."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def clip(interval: Interval, lower: datetime, upper: datetime) -> Interval | None:
    start, end = max(interval[0], lower), min(interval[1], upper)
    return (start, end) if end > start else None


def intersect(interval: Interval, merged: list[Interval]) -> list[Interval]:
    """The parts of `interval` covered by `merged` (which must come from merge())."""
    out = []
    for other in merged:
        if other[0] >= interval[1]:
            break
        part = clip(interval, *other)
        if part:
            out.append(part)
    return out


def subtract(interval: Interval, merged: list[Interval]) -> list[Interval]:
    """The parts of `interval` not covered by `merged`."""
    out, cursor = [], interval[0]
    for start, end in intersect(interval, merged):
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < interval[1]:
        out.append((cursor, interval[1]))
    return out


def overlap_minutes(interval: Interval, merged: list[Interval]) -> Fraction:
    return sum((minutes_between(s, e) for s, e in intersect(interval, merged)), Fraction(0))
