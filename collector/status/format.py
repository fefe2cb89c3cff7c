"""How figures read on the pages: percentages, minutes, durations and times for a person.

Exact figures stay exact enough to be checked against the JSON report: an availability is never
rounded up to 100 % (99.9996 % does not read "100 %"), and minutes keep up to three decimals.
"""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction
from zoneinfo import ZoneInfo

__all__ = ["percent", "minutes", "duration", "moment", "iso_utc", "month_name"]

UTC = timezone.utc
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


def percent(value: float | Fraction | None) -> str:
    """"99.306 %", "100 %", "99.9996 %"; "–" when there is no figure."""
    if value is None:
        return "–"
    value = float(value)
    if value >= 100:
        return "100 %"
    for digits in range(3, 8):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if float(text) < 100:
            return f"{text} %"
    return "99.9999999 %"


def _number(value: float | Fraction) -> str:
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def minutes(value: float | Fraction | None) -> str:
    """"216 min", "12.5 min", and the human length beside it when an hour or longer:
    "216 min (3 h 36 min)"."""
    if value is None:
        return "–"
    text = f"{_number(value)} min"
    if abs(float(value)) >= 60:
        text += f" ({duration(abs(float(value)) * 60)})"
    return text


def duration(seconds: float) -> str:
    """"10 s", "3 min", "1 h 5 min", "2 d 3 h"; shows at most the two largest units, whole seconds."""
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    parts = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        count, total = divmod(total, size)
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count} {unit}" for count, unit in parts[:2] if count]
    return " ".join(shown)


def moment(value: datetime | str | None, tz: str | ZoneInfo | None = None) -> str:
    """"2026-11-25 02:39:40 UTC" (seconds only when not zero), in `tz` when given."""
    if value is None:
        return "–"
    if isinstance(value, str):
        value = parse_iso(value)
    zone = UTC if tz is None else (ZoneInfo(tz) if isinstance(tz, str) else tz)
    local = value.astimezone(zone)
    pattern = "%Y-%m-%d %H:%M:%S" if local.second or local.microsecond else "%Y-%m-%d %H:%M"
    name = "UTC" if zone is UTC else local.strftime("%Z")
    return f"{local.strftime(pattern)} {name}"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text).astimezone(UTC)


def iso_utc(value: datetime | str | None) -> str:
    """The machine-readable form for <time datetime="...">."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = parse_iso(value)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def month_name(period: str) -> str:
    """"2026-11" -> "November 2026"."""
    year, month = period.split("-")
    return f"{MONTHS[int(month) - 1]} {int(year)}"
