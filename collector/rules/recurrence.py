"""Recurring maintenance: an RFC 5545 RRULE with a duration, expanded into ordinary announcements.

A series is recorded once; each of its occurrences is judged by the contract's notice, window,
continuous and budget rules exactly as a one-off announcement of that occurrence recorded when
the series was (collector.rules.maintenance). Expansion happens at the edge where maintenance is
loaded (collector.reporting.load_maintenance, and the offline entry points in
collector.rules.offline), always for a bounded range, so that reports, the live evaluator and
offline reports see the same occurrences.

Rules (RecurrenceError names the field: `rrule`, `duration`, `timezone` or `start`):
  rrule      the RRULE value of RFC 5545 §3.3.10 ("FREQ=WEEKLY;BYDAY=SU", an "RRULE:" prefix is
             allowed), expanded by python-dateutil from `start` (DTSTART). FREQ is HOURLY or
             coarser and occurrences are at least MIN_SPACING apart: maintenance that recurs more
             often than hourly is an outage with a note, not a plan. DTSTART, RDATE and EXDATE are
             not part of it (`start` is the DTSTART; single occurrences are cancelled one by one).
  duration   how long each occurrence lasts, exact time (RFC 5545 §3.3.6: "PT2H" or the config
             syntax "2h", "90m"); more than 0 and no longer than the shortest gap between two
             occurrences, so that no two occurrences overlap.
  timezone   the zone in which the rule repeats (a contract that states local times: "Sundays
             02:00 America/Chicago" keeps 02:00 across daylight saving); UTC by default. A local
             time that does not exist (the spring gap) is read with the offset before the gap,
             and an ambiguous one as its first instance (RFC 5545 §3.3.5), as zoneinfo does with
             fold=0.
  cancelled  a cancelled occurrence excludes nothing (it is listed, cancelled, like a cancelled
             one-off announcement); a cancelled series has no occurrence that starts after its
             cancellation (those that started before stand).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

from .durations import format_duration, parse_duration
from .model import Announcement, iso
from .periods import month_bounds, period_of, next_period

__all__ = [
    "RecurrenceError", "Recurrence", "MaintenanceSeries", "Occurrence", "CancelledOccurrence",
    "parse_recurrence", "parse_series_duration", "expand_maintenance", "judged_range",
    "has_series", "MIN_SPACING", "MAX_OCCURRENCES",
]

UTC = timezone.utc
# Maintenance repeats at most hourly (FREQ=MINUTELY or BYMINUTE=0,30 would be refused): it bounds
# what a range can expand to (a year: at most 8,784 occurrences).
MIN_SPACING = timedelta(hours=1)
# Validation looks this far from the first occurrence for the shortest gap (a year and a bit, so a
# yearly pattern, a daylight-saving change and a leap day are all seen), at most this many.
SAMPLE_SPAN = timedelta(days=400)
SAMPLE_MAX = 10_000
# What one expansion may yield: ten years of hourly occurrences; more is a range nobody reports on.
MAX_OCCURRENCES = 87_840
MAX_RRULE_LENGTH = 500
# An occurrence lasts at most a year; a longer one is not maintenance a contract budgets.
MAX_DURATION = timedelta(days=366)
# INTERVAL beyond this repeats more rarely than anyone plans (and dateutil's arithmetic overflows).
MAX_INTERVAL = 10_000
# Where a series may start: the collector's UTC instants, far enough from datetime's limits that
# expanding a range around them never leaves them.
EARLIEST_START = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_START = datetime(2200, 1, 1, tzinfo=timezone.utc)
_PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYYEARDAY", "BYWEEKNO",
          "BYHOUR", "BYMINUTE", "BYSETPOS", "WKST"}
_FREQS = {"YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY"}
_DAY_FILTERS = ("BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO")
_ISO_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


class RecurrenceError(ValueError):
    """A bad series, naming the field: "rrule: FREQ=MINUTELY is finer than hourly"."""

    def __init__(self, field: str, message: str):
        self.field, self.reason = field, message
        super().__init__(f"{field}: {message}")


def parse_series_duration(value: Any) -> timedelta:
    """An occurrence's length: RFC 5545 "PT2H" / "P1DT2H" (exact time) or "2h", "90m", seconds."""
    if isinstance(value, str) and value.strip().upper().startswith("P"):
        match = _ISO_DURATION.match(value.strip().upper())
        if not match or value.strip().upper() in ("P", "PT"):
            raise RecurrenceError("duration", f"{value!r} is not an RFC 5545 duration (e.g. PT2H) nor 2h, 90m")
        w, d, h, m, s = (int(x or 0) for x in match.groups())
        seconds = float(((w * 7 + d) * 24 + h) * 3600 + m * 60 + s)
    else:
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError):
            raise RecurrenceError("duration", f"{value!r} is not a duration (e.g. 2h, 90m, PT2H)") from None
    if seconds <= 0:
        raise RecurrenceError("duration", "must be more than 0")
    if seconds > MAX_DURATION.total_seconds():
        raise RecurrenceError("duration", f"at most {format_duration(MAX_DURATION.total_seconds())} (one occurrence)")
    return timedelta(seconds=seconds)


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise RecurrenceError("timezone", f"expected an IANA time zone name (e.g. UTC, America/Chicago), got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecurrenceError("timezone", f"unknown time zone {name!r} (an IANA name, e.g. America/Chicago)") from None


def _rule_parts(text: Any) -> tuple[str, dict[str, str]]:
    """(the RRULE value, {part: value}); RecurrenceError("rrule", ...) for what RFC 5545 or this
    module does not accept."""
    if not isinstance(text, str) or not text.strip():
        raise RecurrenceError("rrule", "expected an RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=SU")
    value = text.strip()
    if len(value) > MAX_RRULE_LENGTH:
        raise RecurrenceError("rrule", f"at most {MAX_RRULE_LENGTH} characters")
    if value.upper().startswith("RRULE:"):
        value = value[6:]
    if any(c in value for c in "\r\n\x00") or ":" in value:
        raise RecurrenceError("rrule", "give only the RRULE value (FREQ=...;...): DTSTART is `start`, and "
                                       "RDATE or EXDATE are not accepted (cancel single occurrences instead)")
    parts: dict[str, str] = {}
    for piece in value.split(";"):
        name, eq, part = piece.partition("=")
        name = name.strip().upper()
        if not eq or not name or not part.strip():
            raise RecurrenceError("rrule", f"{piece!r} is not NAME=VALUE")
        if name not in _PARTS:
            raise RecurrenceError("rrule", f"{name} is not accepted (accepted: {', '.join(sorted(_PARTS))})")
        if name in parts:
            raise RecurrenceError("rrule", f"{name} is given twice")
        parts[name] = part.strip().upper()
    freq = parts.get("FREQ")
    if freq is None:
        raise RecurrenceError("rrule", "FREQ is required (RFC 5545 §3.3.10)")
    if freq not in _FREQS:
        raise RecurrenceError("rrule", f"FREQ={freq} is not a frequency (YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY)")
    if freq in ("MINUTELY", "SECONDLY"):
        raise RecurrenceError("rrule", f"FREQ={freq} is finer than hourly; maintenance repeats at most hourly")
    for name in ("INTERVAL", "COUNT"):
        if name in parts and not (parts[name].isascii() and parts[name].isdigit()):
            raise RecurrenceError("rrule", f"{name}={parts[name]} is not a whole number")
    if "INTERVAL" in parts and not 1 <= int(parts["INTERVAL"]) <= MAX_INTERVAL:
        raise RecurrenceError("rrule", f"INTERVAL={parts['INTERVAL']}: from 1 to {MAX_INTERVAL}")
    if "COUNT" in parts and int(parts["COUNT"]) < 1:
        raise RecurrenceError("rrule", f"COUNT={parts['COUNT']}: at least 1")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("rrule", "COUNT and UNTIL together (RFC 5545 §3.3.10: one or the other)")
    if freq not in ("MONTHLY", "YEARLY") and re.search(r"[+-]?\d", parts.get("BYDAY", "")):
        raise RecurrenceError("rrule", f"BYDAY={parts['BYDAY']}: a numbered weekday needs FREQ=MONTHLY or YEARLY "
                                       "(RFC 5545 §3.3.10)")
    return ";".join(f"{k}={v}" for k, v in parts.items()), parts


@dataclass(frozen=True)
class Recurrence:
    """A validated rule: `start` (DTSTART, UTC) repeated by `rrule` in `timezone`, each occurrence
    lasting `duration`."""
    rrule: str
    start: datetime
    duration: timedelta
    timezone: str = "UTC"

    def _rule(self):
        local = self.start.astimezone(ZoneInfo(self.timezone))
        # dateutil builds each occurrence as a wall time carrying `local`'s zone; UNTIL in UTC
        # (RFC 5545 requires it where DTSTART has a zone) compares as an instant
        return rrulestr(self.rrule, dtstart=local)

    def starts(self, start: datetime, end: datetime) -> list[datetime]:
        """The UTC starts of the occurrences that overlap [start, end), in order."""
        if end <= start:
            return []
        out: list[datetime] = []
        for moment in self._rule().xafter(start - self.duration, inc=True):
            # a wall time read with fold=0: the offset before a gap, the first of an ambiguous hour
            utc = moment.replace(fold=0).astimezone(UTC)
            if utc >= end:
                break
            if utc + self.duration <= start or (out and utc <= out[-1]):
                continue   # ended before the range, or the same instant twice (a spring gap)
            out.append(utc)
            if len(out) > MAX_OCCURRENCES:
                raise ValueError(f"more than {MAX_OCCURRENCES} occurrences of {self.rrule} from {iso(start)} "
                                 f"to {iso(end)}: ask for a shorter range")
        return out

    def occurrences(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """(start, end) in UTC of each occurrence overlapping [start, end)."""
        return [(s, s + self.duration) for s in self.starts(start, end)]

    def is_occurrence(self, moment: datetime) -> bool:
        return moment.astimezone(UTC) in self.starts(moment, moment + timedelta(microseconds=1))

    def next_starts(self, after: datetime, count: int) -> list[datetime]:
        """Up to `count` occurrence starts at or after `after`."""
        out: list[datetime] = []
        for moment in self._rule().xafter(after, inc=True):
            utc = moment.replace(fold=0).astimezone(UTC)
            if utc < after or (out and utc <= out[-1]):
                continue
            out.append(utc)
            if len(out) >= count:
                break
        return out


def parse_recurrence(rrule: Any, start: datetime, duration: Any, tz: Any = "UTC") -> Recurrence:
    """A Recurrence, validated (module docstring); RecurrenceError naming the field otherwise.

    1. The zone, the duration and the rule's parts (FREQ hourly or coarser, no DTSTART inside).
    2. python-dateutil parses it from `start`.
    3. The rule has an occurrence: a set of day filters no date matches (BYMONTH=2;BYMONTHDAY=30)
       is found on a yearly probe first, because dateutil looks for one until the year 9999.
    4. Over SAMPLE_SPAN from the first occurrence: occurrences at least MIN_SPACING apart, and the
       duration no longer than the shortest gap (in UTC, so a daylight-saving change counts)."""
    zone = _zone(tz)
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise RecurrenceError("start", "expected a timestamp with a UTC offset")
    if not EARLIEST_START <= start <= LATEST_START:
        raise RecurrenceError("start", f"{iso(start)} is outside {EARLIEST_START.year}..{LATEST_START.year}")
    length = duration if isinstance(duration, timedelta) else parse_series_duration(duration)
    if length <= timedelta(0):
        raise RecurrenceError("duration", "must be more than 0")
    if length > MAX_DURATION:
        raise RecurrenceError("duration", f"at most {format_duration(MAX_DURATION.total_seconds())} (one occurrence)")
    value, parts = _rule_parts(rrule)
    local = start.astimezone(zone)
    try:
        rule = rrulestr(value, dtstart=local)
    except (ValueError, TypeError, OverflowError) as err:
        raise RecurrenceError("rrule", f"{value} does not parse: {err}") from None
    if parts["FREQ"] in ("WEEKLY", "DAILY", "HOURLY") and any(p in parts for p in _DAY_FILTERS):
        probe = ";".join(["FREQ=YEARLY", *(f"{p}={parts[p]}" for p in ("BYMONTH", *_DAY_FILTERS) if p in parts)])
        try:
            feasible = rrulestr(probe, dtstart=local.replace(hour=0, minute=0, second=0, microsecond=0)).after(
                local - timedelta(days=1), inc=True) is not None
        except (ValueError, TypeError, OverflowError) as err:
            raise RecurrenceError("rrule", f"{value} does not parse: {err}") from None
        if not feasible:
            raise RecurrenceError("rrule", f"{value}: no date matches its BY... parts, so it has no occurrence")
    recurrence = Recurrence(value, start.astimezone(UTC), length, zone.key)
    sample: list[datetime] = []
    try:
        first = recurrence.next_starts(start.astimezone(UTC), 1)
        if not first:
            raise RecurrenceError("rrule", f"{value} has no occurrence from {iso(start)} on")
        for moment in rule.xafter(first[0].astimezone(zone), inc=True):
            utc = moment.replace(fold=0).astimezone(UTC)
            if utc > first[0] + SAMPLE_SPAN or len(sample) >= SAMPLE_MAX:
                break
            if not sample or utc > sample[-1]:
                sample.append(utc)
    except (ValueError, TypeError, OverflowError) as err:
        if isinstance(err, RecurrenceError):
            raise
        raise RecurrenceError("rrule", f"{value} cannot be expanded from {iso(start)}: {err}") from None
    gaps = [(b - a, a, b) for a, b in zip(sample, sample[1:])]
    if gaps:
        gap, a, b = min(gaps)
        if gap < MIN_SPACING:
            raise RecurrenceError("rrule", f"{value} has occurrences {format_duration(gap.total_seconds())} apart "
                                           f"({iso(a)} and {iso(b)}); maintenance repeats at most hourly")
        if length > gap:
            raise RecurrenceError("duration", f"{format_duration(length.total_seconds())} is longer than the "
                                              f"{format_duration(gap.total_seconds())} between occurrences "
                                              f"{iso(a)} and {iso(b)}: occurrences would overlap")
    return recurrence


@dataclass(frozen=True)
class CancelledOccurrence:
    start: datetime               # the occurrence's start (UTC), as the series expands it
    cancelled_at: datetime        # by the collector's clock
    cancel_reason: str = ""
    cancelled_by: str = ""


@dataclass(frozen=True)
class Occurrence(Announcement):
    """One occurrence of a series: an announcement recorded when the series was."""
    series_id: int | None = None

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["series_id"] = self.series_id
        return out


@dataclass(frozen=True)
class MaintenanceSeries:
    """A recorded series (collector.db.MaintenanceSeries, or a line of an offline file): its rule,
    its record (recorded_at, stated `announced`, who) and the occurrences cancelled one by one."""
    kind: str
    recurrence: Recurrence
    recorded_at: datetime | None
    announced: datetime | None = None
    note: str = ""
    recorded_by: str = ""
    author: str = ""
    cancelled_at: datetime | None = None
    cancel_reason: str = ""
    id: int | None = None
    cancelled_occurrences: tuple[CancelledOccurrence, ...] = ()

    def __post_init__(self) -> None:
        if self.recorded_at is None and self.announced is None:
            raise ValueError(f"maintenance series {self.kind} from {iso(self.start)} has neither recorded_at nor announced")

    @property
    def start(self) -> datetime:
        return self.recurrence.start

    @property
    def recorded(self) -> datetime:
        return self.recorded_at if self.recorded_at is not None else self.announced  # type: ignore[return-value]

    def announcements(self, start: datetime, end: datetime, *, include_cancelled: bool = True) -> list[Occurrence]:
        """The occurrences overlapping [start, end) as announcements, each recorded when the
        series was; those cancelled one by one carry their cancellation (left out without
        `include_cancelled`)."""
        cancelled = {c.start: c for c in self.cancelled_occurrences}
        out = []
        for s, e in self.recurrence.occurrences(start, end):
            if self.cancelled_at is not None and s > self.cancelled_at:
                break   # the series was cancelled before this occurrence began
            c = cancelled.get(s)
            if c is not None and not include_cancelled:
                continue
            out.append(Occurrence(self.kind, self.announced, s, e, self.note, recorded_at=self.recorded_at,
                                  recorded_by=self.recorded_by, author=self.author,
                                  cancelled_at=c.cancelled_at if c else None,
                                  cancel_reason=(c.cancel_reason if c else ""), series_id=self.id))
        return out

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "start": iso(self.start), "rrule": self.recurrence.rrule,
                "duration": format_duration(self.recurrence.duration.total_seconds()),
                "timezone": self.recurrence.timezone, "note": self.note, "recorded_at": iso(self.recorded),
                "stated_announced": iso(self.announced), "recorded_by": self.recorded_by, "author": self.author,
                "cancelled_at": iso(self.cancelled_at), "cancel_reason": self.cancel_reason,
                "cancelled_occurrences": [{"start": iso(c.start), "cancelled_at": iso(c.cancelled_at),
                                           "cancel_reason": c.cancel_reason} for c in self.cancelled_occurrences]}


def expand_maintenance(items: Iterable[Announcement | MaintenanceSeries], start: datetime, end: datetime, *,
                       include_cancelled: bool = True) -> list[Announcement]:
    """Announcements as they are, and each series' occurrences overlapping [start, end), in start
    order. Pass a range of whole local months (judged_range): a kind's monthly budget is used in
    start order, so the occurrences earlier in a month decide what a later one may exclude."""
    items = list(items)
    if not has_series(items):
        return items   # one-off announcements only: as given, in the caller's order
    out: list[Announcement] = []
    for item in items:
        if isinstance(item, MaintenanceSeries):
            out.extend(item.announcements(start, end, include_cancelled=include_cancelled))
        else:
            out.append(item)
    return sorted(out, key=lambda a: (a.start, a.recorded))


def judged_range(tz, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole local calendar months of `tz` (where monthly budgets apply)."""
    first = month_bounds(period_of(start, tz), tz)[0]
    last_period = period_of(max(start, end - timedelta(microseconds=1)), tz)
    return first, month_bounds(next_period(last_period), tz)[0]


def has_series(items: Sequence[Any]) -> bool:
    return any(isinstance(i, MaintenanceSeries) for i in items)
