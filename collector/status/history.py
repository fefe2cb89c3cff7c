"""What the status page shows, computed from plain values with no I/O: daily bars, each service's
current state, and readable summaries of a window's evidence (issue 6, item 1).

Daily availability follows the report's arithmetic on one UTC day: the verified outage minutes in
the day over the day's judged minutes (today: so far). Minutes of rounds without a verdict
(UNKNOWN: too few agents reported) are not judged: they are neither up nor down, and a day that
has any is drawn hatched, never as fully up. A day with DEGRADED rounds (up, but the quorum saw the
service slower than its checks' degraded_after) and no outage is drawn amber; its degraded time is
downtime only where the policy counts it as down, and then it is a verified outage like any other.
Maintenance does not change the bar (the SLA report is where allowed maintenance is excluded); the
bar's label says it was there. A day without a
single result for any of the service's components has no figure: it is shown as "no data".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable, Sequence

from markupsafe import Markup, escape

from .format import duration, moment, percent

__all__ = [
    "DAYS_SHOWN", "STATES", "Bar", "Days", "ServiceState", "EvidenceView", "daily_bars", "period_summary",
    "bar_level", "current_state", "summarise_rounds", "evidence_view", "result_details", "LEVELS",
    "FIGURE_PERIODS", "Figure", "availability_figure", "worst_bars", "compact_bars",
]

UTC = timezone.utc
DAY = timedelta(days=1)
_US = timedelta(microseconds=1)
DAYS_SHOWN = 90
# Rounds listed one by one in an evidence <details>; longer windows link to the JSON for the rest.
ROUNDS_LISTED = 10
# A service's state is unknown when a component has had no result for this many of its intervals
# (after the evaluation grace): one late round is normal, two in a row are not.
SILENT_INTERVALS = 2

# (css class, lowest availability in the band, legend text): highest band first.
LEVELS: tuple[tuple[str, float | None, str], ...] = (
    ("up", 100.0, "100 %: no verified outage"),
    ("minor", 99.0, "99 % to under 100 %"),
    ("partial", 95.0, "95 % to under 99 %"),
    ("major", 0.0, "under 95 %"),
    ("degraded", None, "amber: up but degraded for part of the day (slower than its checks' limit), no verified outage"),
    ("unknown", None, "hatched: some rounds that day had no verdict (too few agents reported); not counted as up"),
    ("nodata", None, "grey: no data, no result that day"),
)


@dataclass(frozen=True)
class Bar:
    level: str                     # a css class from LEVELS
    availability: float | None     # percent; None: no data
    outage_us: int                 # verified outage in the day, microseconds
    day_us: int                    # length of the day: 24 h, or so far for today
    label: str                     # the exact figure, shown on hover and focus and read aloud
    period: str                    # "YYYY-MM" of the day, for the link to that month's report
    unknown_us: int = 0            # rounds without a verdict in the day, not counted as up
    degraded_us: int = 0           # DEGRADED rounds in the day
    maintenance: bool = False      # announced maintenance touched the day
    span: int = 1                  # days it stands for (compact_bars: uneventful days drawn as one)


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

    def plain_bars(self) -> list[tuple["Bar", "Bar"]]:
        """Per day, the bar of a day with nothing but results (up all day) and of a day without
        any (no data), [without, with] evidence: built once a page, shared by every service."""
        cached = self.__dict__.get("_plain")
        if cached is None:
            cached = []
            for index, name in enumerate(self.names):
                length = self.lengths_us[index]
                nodata = Bar(_LEVEL_CLASSES["nodata"], None, 0, length, _html(f"{name}: no data"), self.periods[index])
                up = (Bar(_LEVEL_CLASSES["up"], 100.0, 0, length, _html(f"{name}: 100 % available, no verified outage"),
                          self.periods[index]) if length > 0 else nodata)
                cached.append((nodata, up))
            object.__setattr__(self, "_plain", cached)
        return cached


# A service's current state (GET /api/v1/status and the page's badges), worst first.
STATES = ("outage", "failing", "unknown", "degraded", "maintenance", "up")


@dataclass(frozen=True)
class ServiceState:
    kind: str    # one of STATES
    text: str    # what the badge says
    detail: str  # one sentence beside it
    since: datetime | None = None  # since when it holds, where known


@dataclass
class EvidenceView:
    """A window's evidence for a person: who failed, in how many rounds, and the rounds."""
    rounds: int
    headline: list[str]
    components: list[dict[str, Any]]      # {"name", "failed_rounds", "degraded_rounds", "agents": [{"agent","failed","succeeded","missing","degraded"}]}
    listed: list[dict[str, Any]] = field(default_factory=list)  # {"slot","verdict","failed","missing"}
    more_rounds: int = 0
    # per agent and component, what its latest failing (or degraded) result of the window said:
    # {"agent","check","slot","text"} (see result_details)
    details: list[dict[str, Any]] = field(default_factory=list)


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
               maintenance: Iterable[tuple[datetime, datetime]] = (),
               unknown: Iterable[tuple[datetime, datetime]] = (),
               degraded: Iterable[tuple[datetime, datetime]] = ()) -> list[Bar]:
    """One bar per day of `days`.

    1. Outage per day from the windows (an open window counts up to now), and the time of rounds
       without a verdict from the `unknown` runs, of DEGRADED rounds from the `degraded` runs.
    2. A day lasts 24 hours; today lasts until now. Its availability is over its judged time
       (the day minus its unknown rounds); a day with unknown rounds is hatched unless it had
       an outage, whose level then shows (its label says how long was unknown); a day with
       degraded rounds, no outage and no unknown rounds is amber.
    3. A day with no evidence (no result for any component; `evidence_days` holds the indexes of
       the days with some) and no outage minutes has no figure: "no data".
    """
    outage = _outage_per_day(windows, days)
    unknown_us = _outage_per_day(unknown, days)
    degraded_us = _outage_per_day(degraded, days)
    with_maintenance = {i for start, end in maintenance for i in _day_indexes(start, end, days)}
    plain = days.plain_bars()
    bars = []
    for index, name in enumerate(days.names):
        lost, length = outage[index], days.lengths_us[index]
        if not (lost or unknown_us[index] or degraded_us[index]) and index not in with_maintenance:
            # most days of most services: up all day, or no data; the same bar for every service
            bars.append(plain[index][index in evidence_days])
            continue
        blind = min(unknown_us[index], max(0, length - lost))
        judged = length - blind
        if length <= 0 or (not lost and index not in evidence_days):
            availability, label, level = None, f"{name}: no data", None
        elif judged <= 0:
            availability, label, level = None, f"{name}: no verdict, too few agents reported", "unknown"
        else:
            availability = 100.0 * (judged - lost) / judged
            label = (f"{name}: {percent(availability)} available, {duration(lost / 1e6)} verified outage" if lost
                     else f"{name}: 100 % available, no verified outage")
            level = "unknown" if blind and not lost else ("degraded" if degraded_us[index] and not lost else None)
        if degraded_us[index] and availability is not None:
            label += f"; {duration(degraded_us[index] / 1e6)} degraded (slower than its limit)"
        if blind and availability is not None:
            label += f"; {duration(blind / 1e6)} without a verdict (not counted as up)"
        if index in with_maintenance:
            label += "; announced maintenance"
        css = _LEVEL_CLASSES[level] if level else bar_level(availability)
        bars.append(Bar(css, availability, lost, length, _html(label), days.periods[index], blind, degraded_us[index],
                        index in with_maintenance))
    return bars


# Worst first: a group's day is drawn as its worst member's. A member without data that day keeps
# the group's day from being drawn as up (unknown is never shown as up).
_BAR_RANK = {level: rank for rank, level in enumerate(("major", "partial", "minor", "unknown", "nodata", "degraded", "up"))}


def worst_bars(members: Sequence[tuple[str, Sequence[Bar]]]) -> list[Bar]:
    """A group's bars: each day its worst member's bar (lowest band; unknown and no data before
    degraded and up), labelled with that member's name; a day is up only when every member was."""
    out: list[Bar] = []
    if not members:
        return out
    for index in range(min(len(bars) for _name, bars in members)):
        name, bar = min(((n, bars[index]) for n, bars in members),
                        key=lambda nb: (_BAR_RANK.get(str(nb[1].level), 0),
                                        nb[1].availability if nb[1].availability is not None else -1.0))
        day, _, figure = str(bar.label).partition(": ")
        label = f"{day}: worst member {name}: {figure}" if len(members) > 1 else str(bar.label)
        out.append(Bar(bar.level, bar.availability, bar.outage_us, bar.day_us, _html(label), bar.period,
                       bar.unknown_us, bar.degraded_us, any(bars[index].maintenance for _n, bars in members)))
    return out


def _uneventful(bar: Bar) -> bool:
    """A day with nothing to say beyond its band: fully up, or no data at all."""
    return bar.span == 1 and not bar.maintenance and not bar.unknown_us and not bar.degraded_us and (
        (bar.availability is None) or (bar.availability >= 100.0 and not bar.outage_us))


def compact_bars(bars: Sequence[Bar], days: Days) -> list[Bar]:
    """The same days with each run of uneventful days of one band (up, or no data) drawn as one
    bar whose label gives the run's first and last day; every day with an outage, unknown or
    degraded rounds or maintenance keeps its own bar and label. For front pages of many services."""
    out: list[Bar] = []
    start = 0
    while start < len(bars):
        bar = bars[start]
        end = start + 1
        if _uneventful(bar):
            while end < len(bars) and _uneventful(bars[end]) and bars[end].level == bar.level:
                end += 1
        if end - start == 1:
            out.append(bar)
        else:
            first, last = days.names[start], days.names[end - 1]
            what = "no data" if bar.availability is None else "100 % available every day"
            out.append(Bar(bar.level, bar.availability, sum(b.outage_us for b in bars[start:end]),
                           sum(b.day_us for b in bars[start:end]), _html(f"{first} to {last}: {what}"),
                           bars[end - 1].period, 0, 0, False, end - start))
        start = end
    return out


def period_summary(bars: Sequence[Bar]) -> tuple[float | None, int]:
    """Availability over the judged time of the days that have data, and how many days have none."""
    total = lost = missing = 0
    for bar in bars:
        if bar.availability is None and not bar.unknown_us:
            missing += 1
        else:
            total += bar.day_us - bar.unknown_us
            lost += bar.outage_us
    if total <= 0:
        return None, missing
    return 100.0 * (total - lost) / total, missing


def current_state(*, open_since: datetime | None, maintenance_until: datetime | None,
                  maintenance_kind: str | None, latest_slots: dict[str, datetime | None],
                  interval: float, grace: float, now: datetime,
                  judged_until: datetime | None = None, latest_run: Any = None,
                  up_since: datetime | None = None, maintenance_since: datetime | None = None) -> ServiceState:
    """The badge and GET /api/v1/status, in this order:

    1. `outage`: a verified window is open.
    2. `maintenance`: announced maintenance is going on.
    3. `unknown`: a component has had no result for two intervals (after the grace), or no round
       has been judged yet, or the evaluator is more than a round behind (those rounds have no
       verdict yet), or the latest settled round is UNKNOWN (too few agents reported).
    4. `failing`: the latest settled round FAILED, not yet long enough to be a verified outage.
    5. `degraded`: the latest settled round was DEGRADED (up, but the quorum saw it slower than
       its checks' degraded_after), not a verified outage.
    6. `up`: the latest settled round was UP, since the end of the latest non-UP run.

    `latest_run` is the policy's latest run of non-UP rounds (start, end, verdict); it speaks for
    the latest round when it ends where judging ends.
    """
    if open_since is not None:
        return ServiceState("outage", "Verified outage in progress",
                            f"Since {moment(open_since)} ({duration((now - open_since).total_seconds())} so far)",
                            open_since)
    if maintenance_until is not None:
        return ServiceState("maintenance", "Under announced maintenance",
                            f"{(maintenance_kind or 'announced').capitalize()} maintenance until {moment(maintenance_until)}",
                            maintenance_since)
    cutoff = now - timedelta(seconds=SILENT_INTERVALS * interval + grace)
    silent = sorted(c for c, slot in latest_slots.items() if slot is None or slot < cutoff)
    if silent:
        lasts = [s for s in latest_slots.values() if s is not None]
        last = f"; last result {moment(max(lasts))}" if lasts else ""
        since = min((latest_slots[c] for c in silent if latest_slots[c] is not None), default=None)
        return ServiceState("unknown", "Unknown: no data",
                            f"No results in the last {duration(SILENT_INTERVALS * interval + grace)} "
                            f"for {', '.join(silent)}{last}",
                            since + timedelta(seconds=interval) if since is not None else None)
    settled_end = _slot_floor(now - timedelta(seconds=grace), interval)
    if judged_until is None:
        return ServiceState("unknown", "Unknown: not judged yet", "No round of this service has been judged yet")
    if judged_until < settled_end - timedelta(seconds=interval):
        return ServiceState("unknown", "Unknown: evaluation behind",
                            f"Rounds after {moment(judged_until)} have not been judged yet", judged_until)
    if latest_run is not None and latest_run.end >= judged_until:
        verdict = getattr(latest_run.verdict, "value", latest_run.verdict)
        if verdict == "failed":
            return ServiceState("failing", "Failing",
                                f"Rounds failing since {moment(latest_run.start)}, not yet long enough to be a "
                                "verified outage", latest_run.start)
        if verdict == "degraded":
            return ServiceState("degraded", "Degraded",
                                f"Up, but slower than its limit since {moment(latest_run.start)}: most agents saw "
                                "it degraded; no verified outage", latest_run.start)
        return ServiceState("unknown", "Unknown: too few agents reported",
                            f"Rounds since {moment(latest_run.start)} have no verdict: too few agents reported",
                            latest_run.start)
    return ServiceState("up", "Up", "No verified outage in progress; the latest round was up", up_since)


def _slot_floor(moment_: datetime, interval: float) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    step = max(1, round(interval * 1_000_000))
    return epoch + timedelta(microseconds=((moment_ - epoch) // _US) // step * step)


def summarise_rounds(evidence: Any) -> dict[str, Any]:
    """A stored window's evidence ({"policy_hash", "rounds": [{"slot", "verdict", "components":
    {name: {"verdict", "failed", "succeeded", "missing", "degraded" (optional)}}}]}) in the report's summary shape
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
            entry = components.setdefault(name, {"failed_rounds": 0, "degraded_rounds": 0, "agents": {}})
            if part.get("verdict") == "failed":
                entry["failed_rounds"] += 1
            elif part.get("verdict") == "degraded":
                entry["degraded_rounds"] += 1
            for key in ("failed", "succeeded", "missing", "degraded"):
                for agent in part.get(key) or ():
                    counts = entry["agents"].setdefault(str(agent), {"failed": 0, "succeeded": 0, "missing": 0,
                                                                      "degraded": 0})
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


def evidence_view(summary: dict[str, Any], details: Sequence[dict[str, Any]] = ()) -> EvidenceView:
    """Sentences and tables from an evidence summary (stored window or report outage), with
    `details` (result_details) where the raw results are at hand."""
    rounds = int(summary.get("rounds") or 0)
    headline, components = [], []
    for name, entry in sorted((summary.get("components") or {}).items()):
        agents = entry.get("agents") or {}
        failed = _agents_phrase(agents, "failed", rounds)
        missing = _agents_phrase(agents, "missing", rounds)
        succeeded = _agents_phrase(agents, "succeeded", rounds)
        slow = _agents_phrase({a: {"degraded": c.get("degraded", 0)} for a, c in agents.items()}, "degraded", rounds)
        text = f"{name}: failed in {entry.get('failed_rounds', 0)} of {rounds} rounds"
        if entry.get("degraded_rounds"):
            text += f", degraded in {entry['degraded_rounds']}"
        if failed:
            text += f"; agents that failed: {'; '.join(failed)}"
        if slow:
            text += f"; degraded: {'; '.join(slow)}"
        if succeeded:
            text += f"; succeeded: {'; '.join(succeeded)}"
        if missing:
            text += f"; missing: {'; '.join(missing)}"
        headline.append(text)
        components.append({"name": name, "failed_rounds": entry.get("failed_rounds", 0),
                           "degraded_rounds": entry.get("degraded_rounds", 0),
                           "agents": [{"agent": a, "degraded": 0, **c} for a, c in sorted(agents.items())]})
    listed = []
    for rnd in summary.get("round_list") or ():
        parts = rnd.get("components") or {}
        listed.append({
            "slot": rnd.get("slot"),
            "verdict": rnd.get("verdict", "?"),
            "parts": [{"name": n, "verdict": p.get("verdict", "?"), "failed": ", ".join(p.get("failed") or ()) or "none",
                       "degraded": ", ".join(p.get("degraded") or ()),
                       "missing": ", ".join(p.get("missing") or ()) or "none"}
                      for n, p in sorted(parts.items()) if isinstance(p, dict)],
        })
    return EvidenceView(rounds=rounds, headline=headline or ["no evidence stored"], components=components,
                        listed=listed, more_rounds=max(0, rounds - len(listed)), details=list(details))



def _seconds(value: Any) -> str:
    """A phase's length: "4 ms", "1.25 s"."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3g} s"


def _result_text(row: Any) -> str:
    """One stored result in a sentence: its error and step, detail, status, and phases."""
    extra = row.extra if isinstance(row.extra, dict) else {}
    if row.ok:
        text = "degraded (ok, but slower than its limit)"
        if row.latency_ms is not None:
            text += f": {row.latency_ms:g} ms"
    else:
        text = str(row.error or "failed")
        if extra.get("failed_step"):
            text += f" at step {str(extra['failed_step'])!r}"
        if row.detail:
            text += f": {row.detail}"
        if row.status_code is not None and (not row.detail or str(row.status_code) not in row.detail):
            text += f" (status {row.status_code})"
    phases = extra.get("phases")
    if isinstance(phases, dict) and phases:
        text += "; phases: " + ", ".join(f"{name} {_seconds(v)}" for name, v in phases.items())
    return text


def result_details(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Per agent and check, its latest failing or degraded result among `rows` (stored results of a
    window's first and last round: agent_id, check, slot, ok, error, detail, status_code,
    latency_ms, extra), as {"agent", "check", "slot", "text"}, sorted by agent and check."""
    latest: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (row.agent_id, row.check)
        if key not in latest or row.slot > latest[key].slot:
            latest[key] = row
    return [{"agent": agent, "check": check, "slot": row.slot, "text": _result_text(row)}
            for (agent, check), row in sorted(latest.items())]


# --- availability over the last 24 h, 7 d, 30 d, 90 d (the front page and the badges) ----------

# (label, length): the figures shown beside each service's bars.
FIGURE_PERIODS: tuple[tuple[str, timedelta], ...] = (
    ("24 h", DAY), ("7 d", 7 * DAY), ("30 d", 30 * DAY), ("90 d", 90 * DAY),
)


@dataclass(frozen=True)
class Figure:
    """Availability over one period, the report's way: `best` over the judged time only (unknown
    minutes are neither up nor down), `worst` with every unknown minute counted as down. With no
    judged minute at all both are None: there is nothing to show, and never 100 %."""
    label: str
    best: float | None
    worst: float | None
    outage_us: int
    unknown_us: int      # rounds without a verdict and days without any result, in the period
    judged_us: int

    @property
    def certain(self) -> bool:
        """True when no unknown time could change the figure."""
        return self.unknown_us == 0


def _merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[list[datetime]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _minus(spans: list[tuple[datetime, datetime]], cut: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """`spans` without `cut` (both merged)."""
    out = []
    for start, end in spans:
        pieces = [(start, end)]
        for c_start, c_end in cut:
            if c_end <= start or c_start >= end:
                continue
            pieces = [p for a, b in pieces for p in ((a, min(b, c_start)), (max(a, c_end), b)) if p[1] > p[0]]
        out.extend(pieces)
    return out


def _length_us(spans: Iterable[tuple[datetime, datetime]]) -> int:
    return sum((b - a) // _US for a, b in spans)


def availability_figure(label: str, start: datetime, *, days: Days,
                        windows: Iterable[tuple[datetime, datetime | None]], evidence_days: set[int],
                        unknown: Iterable[tuple[datetime, datetime]], judged_until: datetime | None,
                        judged_from: datetime | None = None) -> Figure:
    """Availability over [start, now), clipped to the days the page knows about (`days`).

    1. Outage: the verified windows in the period (an open one counts up to now).
    2. Not yet judged: the time after `judged_until` (the evaluator has not reached it; like the
       report's minutes after the last finished slot, it has not happened yet for the figures).
       An outage there still counts: it is verified.
    3. Unknown: rounds without a verdict, the days without any result for the service's
       components (the bars' "no data") and the time before `judged_from` (its components' first
       result), outside the outage.
    4. best = (judged − outage) / judged, worst = (judged − outage) / (judged + unknown), judged
       being the period minus the unknown and the not-yet-judged time. Nothing judged: no figure.
    """
    now = days.now
    start = max(start, days.starts[0])
    if start >= now:
        return Figure(label, None, None, 0, 0, 0)

    def clip(spans):
        return _merge((max(a, start), min(now if b is None else b, now)) for a, b in spans)

    outage = clip(windows)
    pending = _minus(clip([(judged_until or start, now)]), outage)
    no_data = [(d, d + DAY) for i, d in enumerate(days.starts) if i not in evidence_days]
    if judged_from is not None:
        no_data.append((start, judged_from))
    blind = _minus(_minus(clip(list(unknown) + no_data), outage), pending)
    total = (now - start) // _US - _length_us(pending)
    lost, unknown_us = _length_us(outage), _length_us(blind)
    judged = total - unknown_us
    if judged <= 0:
        return Figure(label, None, None, lost, unknown_us, max(judged, 0))
    best = 100.0 * (judged - lost) / judged
    worst = 100.0 * (judged - lost) / total
    return Figure(label, best, worst, lost, unknown_us, judged)
