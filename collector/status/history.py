"""What the status page shows, computed from plain values with no I/O: daily bars, each service's
current state, and readable summaries of a window's evidence (issue 6, item 1).

Daily availability follows the report's arithmetic on one UTC day: 100 % minus the verified outage
minutes in the day over the day's minutes (today: the minutes so far). Maintenance does not change
the bar (the SLA report is where allowed maintenance is excluded); the bar's label says it was there.
A day without a single result for any of the service's components has no figure: it is shown as
"no data", never as up (issue 3: missing evidence is unknown, never up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable, Sequence

from markupsafe import Markup, escape

from .format import duration, moment, percent

__all__ = [
    "DAYS_SHOWN", "Bar", "Days", "ServiceState", "EvidenceView", "daily_bars", "period_summary",
    "bar_level", "current_state", "summarise_rounds", "evidence_view", "LEVELS",
]

UTC = timezone.utc
DAY = timedelta(days=1)
_US = timedelta(microseconds=1)
DAYS_SHOWN = 90
# Rounds listed one by one in an evidence <details>; longer windows link to the JSON for the rest.
ROUNDS_LISTED = 10
# A service is "no data" when a component has had no result for this many of its intervals
# (after the evaluation grace): one late round is normal, three in a row are not.
SILENT_INTERVALS = 3

# (css class, lowest availability in the band, legend text): highest band first.
LEVELS: tuple[tuple[str, float | None, str], ...] = (
    ("up", 100.0, "100 %: no verified outage"),
    ("minor", 99.0, "99 % to under 100 %"),
    ("partial", 95.0, "95 % to under 99 %"),
    ("major", 0.0, "under 95 %"),
    ("nodata", None, "no data: no result that day"),
)


@dataclass(frozen=True)
class Bar:
    level: str                     # a css class from LEVELS
    availability: float | None     # percent; None: no data
    outage_us: int                 # verified outage in the day, microseconds
    day_us: int                    # length of the day: 24 h, or so far for today
    label: str                     # the exact figure, shown on hover and focus and read aloud
    period: str                    # "YYYY-MM" of the day, for the link to that month's report


@dataclass(frozen=True)
class Days:
    """The days the bars stand for, with what every service's bars share: computed once a page."""
    starts: list[datetime]         # UTC midnights, oldest first; the last is today
    now: datetime
    names: list[str]               # "Mon 23 Nov 2026", "Wed 25 Nov 2026 (today, so far)"
    periods: list[str]             # "2026-11"
    lengths_us: list[int]          # 24 h, except today: up to now

    @classmethod
    def ending(cls, now: datetime, count: int = DAYS_SHOWN) -> "Days":
        today = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
        starts = [today - DAY * (count - 1 - i) for i in range(count)]
        names = [f"{d:%a} {d.day} {d:%b %Y}" + (" (today, so far)" if d == today else "") for d in starts]
        lengths = [max(0, (min(d + DAY, now) - d) // _US) for d in starts]
        return cls(starts, now, names, [Markup(f"{d:%Y-%m}") for d in starts], lengths)


@dataclass(frozen=True)
class ServiceState:
    kind: str    # "up" | "outage" | "maintenance" | "nodata"
    text: str    # what the badge says
    detail: str  # one sentence beside it


@dataclass
class EvidenceView:
    """A window's evidence for a person: who failed, in how many rounds, and the rounds."""
    rounds: int
    headline: list[str]
    components: list[dict[str, Any]]      # {"name", "failed_rounds", "agents": [{"agent","failed","succeeded","missing"}]}
    listed: list[dict[str, Any]] = field(default_factory=list)  # {"slot","verdict","failed","missing"}
    more_rounds: int = 0


@lru_cache(maxsize=8192)
def _html(label: str) -> Markup:
    # Hundreds of services share most days' labels ("... 100 % available"): escape each text once.
    return escape(label)


_LEVEL_CLASSES = {level: Markup(level) for level, _floor, _text in LEVELS}


def bar_level(availability: float | None) -> str:
    if availability is None:
        return _LEVEL_CLASSES["nodata"]
    for level, floor, _text in LEVELS:
        if floor is not None and availability >= floor:
            return _LEVEL_CLASSES[level]
    return _LEVEL_CLASSES["major"]


def _day_indexes(start: datetime, end: datetime, days: Days):
    """Indexes of the days that [start, end) touches."""
    first = days.starts[0]
    if end <= first or start >= days.starts[-1] + DAY:
        return range(0)
    lo = max(0, (start - first) // DAY)
    hi = min(len(days.starts), (end - first - _US) // DAY + 1)
    return range(lo, hi)


def _outage_per_day(windows: Iterable[tuple[datetime, datetime | None]], days: Days) -> list[int]:
    """Microseconds of verified outage in each day, walking each window only over the days it touches."""
    out = [0] * len(days.starts)
    for start, end in windows:
        end = days.now if end is None else min(end, days.now)
        for index in _day_indexes(start, end, days):
            day = days.starts[index]
            out[index] += (min(end, day + DAY) - max(start, day)) // _US
    return out


def daily_bars(windows: Iterable[tuple[datetime, datetime | None]], evidence_days: set[int], days: Days,
               maintenance: Iterable[tuple[datetime, datetime]] = ()) -> list[Bar]:
    """One bar per day of `days`.

    1. Outage per day from the windows (an open window counts up to now).
    2. A day lasts 24 hours; today lasts until now.
    3. A day with no evidence (no result for any component; `evidence_days` holds the indexes of
       the days with some) and no outage minutes has no figure: "no data".
    """
    outage = _outage_per_day(windows, days)
    with_maintenance = {i for start, end in maintenance for i in _day_indexes(start, end, days)}
    bars = []
    for index, name in enumerate(days.names):
        lost, length = outage[index], days.lengths_us[index]
        if length <= 0 or (not lost and index not in evidence_days):
            availability, label = None, f"{name}: no data"
        elif lost:
            availability = 100.0 * (length - lost) / length
            label = f"{name}: {percent(availability)} available, {duration(lost / 1e6)} verified outage"
        else:
            availability, label = 100.0, f"{name}: 100 % available, no verified outage"
        if index in with_maintenance:
            label += "; announced maintenance"
        bars.append(Bar(bar_level(availability), availability, lost, length, _html(label), days.periods[index]))
    return bars


def period_summary(bars: Sequence[Bar]) -> tuple[float | None, int]:
    """Availability over the days that have data, and how many days have none."""
    total = lost = missing = 0
    for bar in bars:
        if bar.availability is None:
            missing += 1
        else:
            total += bar.day_us
            lost += bar.outage_us
    if total == 0:
        return None, missing
    return 100.0 * (total - lost) / total, missing


def current_state(*, open_since: datetime | None, maintenance_until: datetime | None,
                  maintenance_kind: str | None, latest_slots: dict[str, datetime | None],
                  interval: float, grace: float, now: datetime) -> ServiceState:
    """The badge: a verified outage first, then announced maintenance, then missing data, else up.

    "No data" is judged per component: the service's rounds are UNKNOWN as soon as one component
    has no results (issue 3, "Composition"), so one silent component is enough.
    """
    if open_since is not None:
        return ServiceState("outage", "Verified outage in progress",
                            f"Since {moment(open_since)} ({duration((now - open_since).total_seconds())} so far)")
    if maintenance_until is not None:
        return ServiceState("maintenance", "Under announced maintenance",
                            f"{(maintenance_kind or 'announced').capitalize()} maintenance until {moment(maintenance_until)}")
    cutoff = now - timedelta(seconds=SILENT_INTERVALS * interval + grace)
    silent = sorted(c for c, slot in latest_slots.items() if slot is None or slot < cutoff)
    if silent:
        lasts = [s for s in latest_slots.values() if s is not None]
        last = f"; last result {moment(max(lasts))}" if lasts else ""
        return ServiceState("nodata", "No data",
                            f"No results in the last {duration(SILENT_INTERVALS * interval + grace)} "
                            f"for {', '.join(silent)}{last}")
    return ServiceState("up", "Up", "No verified outage in progress")


def summarise_rounds(evidence: Any) -> dict[str, Any]:
    """A stored window's evidence ({"policy_hash", "rounds": [{"slot", "verdict", "components":
    {name: {"verdict", "failed", "succeeded", "missing"}}}]}) in the report's summary shape
    (collector.rules.report.evidence_summary): per component the rounds it failed and, per agent,
    how often it failed, succeeded or was missing. Anything malformed counts as no evidence."""
    rounds = evidence.get("rounds") if isinstance(evidence, dict) else None
    if not isinstance(rounds, list):
        rounds = []
    components: dict[str, dict[str, Any]] = {}
    listed = []
    for rnd in rounds:
        parts = rnd.get("components") if isinstance(rnd, dict) else None
        if not isinstance(parts, dict):
            continue
        for name, part in parts.items():
            if not isinstance(part, dict):
                continue
            entry = components.setdefault(name, {"failed_rounds": 0, "agents": {}})
            if part.get("verdict") == "failed":
                entry["failed_rounds"] += 1
            for key in ("failed", "succeeded", "missing"):
                for agent in part.get(key) or ():
                    counts = entry["agents"].setdefault(str(agent), {"failed": 0, "succeeded": 0, "missing": 0})
                    counts[key] += 1
        listed.append(rnd)
    return {"rounds": len(listed),
            "first_slot": listed[0].get("slot") if listed else None,
            "last_slot": listed[-1].get("slot") if listed else None,
            "components": components,
            "round_list": listed[:ROUNDS_LISTED]}


def _agents_phrase(agents: dict[str, dict[str, int]], key: str, rounds: int) -> list[str]:
    """"a1, a2 in all 5 rounds", "a3 in 4 of 5": agents grouped by how often they did `key`."""
    by_count: dict[int, list[str]] = {}
    for agent, counts in agents.items():
        if counts[key]:
            by_count.setdefault(counts[key], []).append(agent)
    out = []
    for count in sorted(by_count, reverse=True):
        names = ", ".join(sorted(by_count[count]))
        how = f"all {rounds} rounds" if count == rounds and rounds > 1 else (
            "the only round" if rounds == 1 else f"{count} of {rounds} rounds")
        out.append(f"{names} in {how}")
    return out


def evidence_view(summary: dict[str, Any]) -> EvidenceView:
    """Sentences and tables from an evidence summary (stored window or report outage)."""
    rounds = int(summary.get("rounds") or 0)
    headline, components = [], []
    for name, entry in sorted((summary.get("components") or {}).items()):
        agents = entry.get("agents") or {}
        failed = _agents_phrase(agents, "failed", rounds)
        missing = _agents_phrase(agents, "missing", rounds)
        succeeded = _agents_phrase(agents, "succeeded", rounds)
        text = f"{name}: failed in {entry.get('failed_rounds', 0)} of {rounds} rounds"
        if failed:
            text += f"; agents that failed: {'; '.join(failed)}"
        if succeeded:
            text += f"; succeeded: {'; '.join(succeeded)}"
        if missing:
            text += f"; missing: {'; '.join(missing)}"
        headline.append(text)
        components.append({"name": name, "failed_rounds": entry.get("failed_rounds", 0),
                           "agents": [{"agent": a, **c} for a, c in sorted(agents.items())]})
    listed = []
    for rnd in summary.get("round_list") or ():
        parts = rnd.get("components") or {}
        listed.append({
            "slot": rnd.get("slot"),
            "verdict": rnd.get("verdict", "?"),
            "parts": [{"name": n, "verdict": p.get("verdict", "?"), "failed": ", ".join(p.get("failed") or ()) or "none",
                       "missing": ", ".join(p.get("missing") or ()) or "none"}
                      for n, p in sorted(parts.items()) if isinstance(p, dict)],
        })
    return EvidenceView(rounds=rounds, headline=headline or ["no evidence stored"], components=components,
                        listed=listed, more_rounds=max(0, rounds - len(listed)))

