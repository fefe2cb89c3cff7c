"""RFC 3339 timestamps as the wire protocol wants them: UTC with a `Z` suffix, and the
wall-clock-aligned slot arithmetic (wire-protocol.md: slot = k * interval since the epoch)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """"2026-11-25T02:40:00Z", or with milliseconds when there are any: "...T02:40:00.013Z"."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: refusing to guess its time zone")
    moment = moment.astimezone(timezone.utc)
    millis = round(moment.microsecond / 1000)
    moment = moment.replace(microsecond=0) + timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis % 1000:
        text += f".{millis % 1000:03d}"
    return text + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset (a `Z` suffix included)."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return moment.astimezone(timezone.utc)


def slot_of(moment: datetime, interval: float) -> datetime:
    """The aligned slot that `moment` belongs to: floor(moment / interval) * interval since the epoch.

    Done in whole milliseconds: the scheduler's fire times are float sums that can land a hair
    below the aligned instant, and a plain float floor would then give the previous slot.
    """
    interval_ms = max(1, round(interval * 1000))
    moment_ms = round((moment - EPOCH) / timedelta(milliseconds=1))
    return EPOCH + timedelta(milliseconds=moment_ms // interval_ms * interval_ms)
