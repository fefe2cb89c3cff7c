"""The month report and claim verification (issue 3, "Availability", "Credits and claims",
"Claim verification", "Evidence").

Figures are exact: minutes are fractions of UTC instants, availability is (T − N) / T × 100 with
T the real minutes of the local month (from `commenced` when the service started inside it) and N
the outage minutes in the period that no allowed maintenance excludes.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Sequence

from . import credits as rules
from .claims import claim_deadline
from .intervals import clip, merge, overlap_minutes, subtract
from .maintenance import Judgement, allowed_intervals, judge_maintenance
from .model import Announcement, Round, Verdict, Window, iso, minutes_between, number
from .periods import days_in_month, month_bounds, period_of
from .policy import Policy
from .windows import is_down

__all__ = ["build_report", "verify_claim", "RoundSpans", "render_text", "render_csv", "render_claim_text",
           "evidence_summary", "CSV_COLUMNS"]

UTC = timezone.utc
_US = timedelta(microseconds=1)


def _pct(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def evidence_summary(window: Window) -> dict:
    """Per component: rounds it failed, and per agent how often it failed, succeeded, was missing.
    Where rounds were DEGRADED (an outage only under degraded_counts_as_down), also the component's
    `degraded_rounds` and, per agent that was, how often it was `degraded` (among its successes)."""
    components: dict[str, dict] = {}
    for rnd in window.rounds:
        for part in rnd.components:
            entry = components.setdefault(part.component, {"failed_rounds": 0, "agents": {}})
            if part.verdict == Verdict.FAILED:
                entry["failed_rounds"] += 1
            elif part.verdict == Verdict.DEGRADED:
                entry["degraded_rounds"] = entry.get("degraded_rounds", 0) + 1
            for field, names in (("failed", part.failed), ("succeeded", part.succeeded), ("missing", part.missing)):
                for agent in names:
                    counts = entry["agents"].setdefault(agent, {"failed": 0, "succeeded": 0, "missing": 0})
                    counts[field] += 1
            for agent in part.degraded:
                counts = entry["agents"][agent]
                counts["degraded"] = counts.get("degraded", 0) + 1
    return {"rounds": len(window.rounds),
            "first_slot": iso(window.rounds[0].slot) if window.rounds else None,
            "last_slot": iso(window.rounds[-1].slot) if window.rounds else None,
            "components": components}


def _slots_overlapping(start: datetime, end: datetime, interval_s: float) -> int:
    if end <= start:
        return 0
    iu = round(interval_s * 1_000_000)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = (start - epoch) // _US
    first -= first % iu
    last = (end - epoch) // _US
    return -(-(last - first) // iu)


def _slot_floor(moment: datetime, interval_s: float) -> datetime:
    iu = round(interval_s * 1_000_000)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    us = (moment - epoch) // _US
    return epoch + timedelta(microseconds=us - us % iu)


def _add_span(spans: list, start: datetime, end: datetime) -> None:
    """Append [start, end), extending the last span when it ends where this one starts (rounds
    come in slot order, so a month of rounds is a handful of spans, not 43,200)."""
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))


def _holding(components: list, marks: list, *, inside: bool = False) -> list:
    """In one pass over two sorted, disjoint lists: the components that share time with some mark
    (each mark lies inside one component); with `inside`, the components that lie inside a mark."""
    out, i = [], 0
    for start, end in marks:
        while i < len(components) and components[i][1] <= start:
            i += 1
        if inside:
            while i < len(components) and components[i][1] <= end:
                if components[i][0] >= start:
                    out.append(components[i])
                i += 1
        elif i < len(components) and components[i][0] < end and (not out or out[-1] is not components[i]):
            out.append(components[i])
    return out


def _minus(parts: list, holes: list) -> list:
    """`parts` without `holes` (both sorted and disjoint), in one pass: a month of flapping gives
    thousands of each, and subtracting one from the other piece by piece would be quadratic."""
    out, j = [], 0
    for start, end in parts:
        while j < len(holes) and holes[j][1] <= start:
            j += 1
        cursor, k = start, j
        while k < len(holes) and holes[k][0] < end:
            if holes[k][0] > cursor:
                out.append((cursor, holes[k][0]))
            cursor = max(cursor, holes[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


class RoundSpans:
    """The rounds of a stretch given as spans of one verdict, so that a month is a handful of
    spans rather than 43,200 rounds (reports from the evaluator's runs of non-UP rounds).

    A span (start, end, verdict) stands for one round of `verdict`, with no component evidence,
    at every slot of the `interval` grid (slots since the Unix epoch, as rounds.slot_of) that
    starts in [start, end). Spans may come in any order but must not share a slot; a slot no
    span covers was not given, as a round missing from a list. Iterating yields those rounds in
    slot order, so it stands wherever a sequence of rounds does; build_report and verify_claim
    count its slots by arithmetic, span by span, and give the same dict as on the rounds
    themselves (tests/test_report_spans.py holds the two equal).
    """

    __slots__ = ("interval", "spans", "_iu")

    def __init__(self, interval: float, spans) -> None:
        iu = round(interval * 1_000_000)
        if iu <= 0:
            raise ValueError(f"the slot interval must be positive, not {interval!r}")
        grid = []
        for start, end, verdict in spans:
            first, stop = -(-_us_of(start) // iu) * iu, -(-_us_of(end) // iu) * iu
            if stop > first:
                grid.append((first, stop, Verdict(verdict)))
        grid.sort(key=lambda span: span[0])
        joined: list = []
        for first, stop, verdict in grid:
            if joined and first < joined[-1][1]:
                raise ValueError(f"spans share slots: one ends {iso(_EPOCH + joined[-1][1] * _US)}, "
                                 f"the next starts {iso(_EPOCH + first * _US)}")
            if joined and first == joined[-1][1] and verdict is joined[-1][2]:
                joined[-1] = (joined[-1][0], stop, verdict)
            else:
                joined.append((first, stop, verdict))
        self.interval = interval
        self._iu = iu
        # (first slot, end of the last slot, verdict), sorted, disjoint, on the grid
        self.spans = tuple((_EPOCH + first * _US, _EPOCH + stop * _US, verdict) for first, stop, verdict in joined)

    def __iter__(self):
        step = timedelta(microseconds=self._iu)
        for first, stop, verdict in self.spans:
            for k in range((stop - first) // step):
                yield Round(first + step * k, verdict, ())

    def __len__(self) -> int:
        return sum((stop - first) // _US // self._iu for first, stop, _ in self.spans)

    def __repr__(self) -> str:
        return f"RoundSpans({self.interval!r}, {[(iso(a), iso(b), v.value) for a, b, v in self.spans]!r})"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us_of(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _grid_of(policy: Policy, rounds: RoundSpans) -> int:
    """The spans' slot interval in microseconds, which must be the policy's."""
    if rounds._iu != round(policy.interval * 1_000_000):
        raise ValueError(f"the rounds are on a {rounds.interval} s grid, the policy's interval is {policy.interval} s")
    return rounds._iu


def _tally_rounds(policy: Policy, rounds: Sequence[Round], measured_from: datetime, judged_until: datetime):
    """Per verdict the rounds of distinct slots that share time with [measured_from,
    judged_until) (the first round of a slot wins), their minutes with a verdict, DEGRADED
    minutes, and the spans of evidence of up time and of down time."""
    known = {}
    counts = {"up": 0, "degraded": 0, "failed": 0, "unknown": 0}
    step = timedelta(seconds=policy.interval)
    known_minutes = degraded_minutes = Fraction(0)
    up_spans: list = []
    failed_spans: list = []
    for rnd in rounds:
        if rnd.slot + step <= measured_from or rnd.slot >= judged_until or rnd.slot in known:
            continue
        known[rnd.slot] = rnd.verdict
        if rnd.verdict != Verdict.UNKNOWN:
            span_start, span_end = max(rnd.slot, measured_from), min(rnd.slot + step, judged_until)
            minutes = minutes_between(span_start, span_end)
            known_minutes += minutes
            if rnd.verdict == Verdict.DEGRADED:
                degraded_minutes += minutes
            # a DEGRADED round is evidence of up time unless the policy counts it as down
            _add_span(failed_spans if is_down(policy, rnd.verdict) else up_spans, span_start, span_end)
    for verdict in known.values():
        counts[Verdict(verdict).value] += 1
    return counts, len(known), known_minutes, degraded_minutes, up_spans, failed_spans


def _tally_spans(policy: Policy, rounds: RoundSpans, measured_from: datetime, judged_until: datetime):
    """_tally_rounds on the rounds a RoundSpans stands for, a span at a time: its slots that
    share time with [measured_from, judged_until) are those in [floor(measured_from),
    ceil(judged_until)) on the grid, and their clipped minutes are one interval."""
    iu = _grid_of(policy, rounds)
    lower = _us_of(measured_from)
    lower -= lower % iu
    upper = -(-_us_of(judged_until) // iu) * iu
    lower_at, upper_at = _EPOCH + lower * _US, _EPOCH + upper * _US
    counts = {"up": 0, "degraded": 0, "failed": 0, "unknown": 0}
    given = 0
    known_minutes = degraded_minutes = Fraction(0)
    up_spans: list = []
    failed_spans: list = []
    for first, stop, verdict in rounds.spans:
        lo, hi = max(first, lower_at), min(stop, upper_at)
        if hi <= lo:
            continue
        n = (hi - lo) // _US // iu
        counts[verdict.value] += n
        given += n
        if verdict != Verdict.UNKNOWN:
            span_start, span_end = max(lo, measured_from), min(hi, judged_until)
            minutes = minutes_between(span_start, span_end)
            known_minutes += minutes
            if verdict == Verdict.DEGRADED:
                degraded_minutes += minutes
            _add_span(failed_spans if is_down(policy, verdict) else up_spans, span_start, span_end)
    return counts, given, known_minutes, degraded_minutes, up_spans, failed_spans


def _intervals(parts) -> list[dict]:
    """[{start, end, minutes}] for JSON."""
    return [{"start": iso(s), "end": iso(e), "minutes": number(minutes_between(s, e))} for s, e in parts]


def _sum_minutes(parts) -> Fraction:
    return sum((minutes_between(s, e) for s, e in parts), Fraction(0))


def _judge(downtime: Fraction, undecided: Fraction, allowed: Fraction, evidence: bool) -> str:
    """met when even the worst case (every undecided minute down) is within the allowed downtime,
    missed when even the best case (every undecided minute up) is not, undetermined otherwise and
    whenever the period has no evidence at all."""
    if not evidence:
        return "undetermined"
    if downtime > allowed:
        return "missed"
    return "met" if downtime + undecided <= allowed else "undetermined"


def build_report(policy: Policy, period: str, rounds: Sequence[Round] | RoundSpans, windows: Sequence[Window],
                 maintenance: Sequence[Announcement], *, now: datetime | None = None, history=None,
                 fee: float | None = None, include_evidence: bool = False) -> dict:
    """The report of one period under one policy.

    1. Period: [local month start, next local month start); measured from `commenced` if later.
       `until` = min(period end, now): open windows and data coverage count up to it.
    2. Maintenance is judged (all announcements given, so monthly budgets see earlier ones).
    3. Each window's part inside [measured_from, until) is its minutes in this period; the part
       overlapping allowed maintenance is excluded; the rest is qualifying downtime (N).
    4. Availability, allowed downtime and the verdict at the target; data coverage from the rounds.
    5. The credit rule and the claim deadline, on the best and on the worst case.

    Verdicts under missing evidence. A minute no UP or FAILED round covers is unknown: it is never
    downtime (NEXON Vision SLA §3.1 counts only minutes of unavailability "calculated under
    Section 2", and §3.2 bases them on monitoring data), but it is not evidence of availability
    either. So every figure that a minute's state could change is given twice:

      availability_percent        best case, (T − N) / T × 100: undecided minutes were up (as before).
      availability_worst_percent  worst case, (T − N − U) / T × 100: undecided minutes were down.
      undecided_minutes (U)       the minutes that would be downtime if every unknown minute had
                                  failed: unknown minutes that no allowed maintenance excludes (those
                                  are excluded either way) and no counted outage covers, plus the
                                  FAILED rounds of runs too short to be an outage that touch unknown
                                  time (had that time failed, the run might have been long enough).
                                  A stretch of them with UP rounds on both sides that is shorter than
                                  the policy's `min_duration` is left out: it could not have been an
                                  outage. With `min_duration` 0 this is exactly the unknown minutes
                                  outside allowed maintenance (and outside counted outages).
      unknown_excluded_minutes    the unknown minutes inside allowed maintenance (in neither case).
      verdict                     "met" when even the worst case meets the target, "missed" when even
                                  the best case misses it, otherwise "undetermined"; null without a
                                  target.
      met                         true / false / null to match the verdict (null: undetermined).
      undetermined_by_minutes     when undetermined: the target is missed if more than this many of
                                  the undecided minutes were down (= remaining_budget_minutes);
                                  null otherwise.
      guaranteed_met              the same three-way answer at `guaranteed_percent`.

    A period with no UP or FAILED round and no outage in it has no evidence: both availabilities
    are null (never 100) and the verdict is undetermined. With `now` inside the period, minutes
    after the last finished slot are not counted as unknown (they have not happened yet).
    With no undecided minutes, best and worst coincide and every figure is what it always was.

    `rounds` is a sequence of rounds or a RoundSpans (the same rounds as spans of one verdict,
    counted per span: the same dict, at the cost of a handful of spans instead of every slot).
    """
    target = policy.require_target()
    tz = policy.tz
    period_start, period_end = month_bounds(period, tz)
    measured_from = period_start
    if policy.commenced is not None and policy.commenced > period_start:
        measured_from = min(policy.commenced, period_end)
    until = period_end if now is None else min(period_end, max(now, measured_from))
    total = minutes_between(measured_from, period_end)
    notes: list[str] = []
    if policy.commenced is not None and policy.commenced >= period_end:
        notes.append(f"the service commenced {iso(policy.commenced)}, after this period")

    judgements = judge_maintenance(policy, maintenance)
    allowed = allowed_intervals(judgements)

    # 3. outages
    outages, pieces = [], []
    for window in sorted(windows, key=lambda w: w.start):
        window_end = window.end if window.end is not None else max(until, window.start)
        piece = clip((window.start, window_end), measured_from, until)
        if piece is None:
            continue
        minutes = minutes_between(*piece)
        excluded = overlap_minutes(piece, allowed)
        outages.append({
            "window": window, "piece": piece, "minutes": minutes, "excluded": excluded,
            "qualifying": minutes - excluded, "unexcluded": subtract(piece, allowed),
        })
        pieces.append(piece)
    outage_minutes = sum((o["minutes"] for o in outages), Fraction(0))
    excluded_minutes = sum((o["excluded"] for o in outages), Fraction(0))
    downtime = outage_minutes - excluded_minutes

    # 4. coverage: which minutes have evidence (UP or FAILED rounds) and which are unknown
    # with `now` inside the period, the slot that contains it has not finished: judge up to its start
    judged_until = until if until == period_end else _slot_floor(until, policy.interval)
    judged_until = max(judged_until, measured_from)
    expected_rounds = _slots_overlapping(measured_from, judged_until, policy.interval)
    tally = _tally_spans if isinstance(rounds, RoundSpans) else _tally_rounds
    counts, given, known_minutes, degraded_minutes, up_spans, failed_spans = tally(
        policy, rounds, measured_from, judged_until)
    counts["unknown"] += max(0, expected_rounds - given)  # slots nobody gave us are UNKNOWN
    judged = counts["up"] + counts["degraded"] + counts["failed"]
    coverage = (Fraction(judged, expected_rounds) * 100) if expected_rounds else None
    unknown_minutes = minutes_between(measured_from, judged_until) - known_minutes

    # the worst case: unknown time down, and with it any too-short failed run it touches
    failed_merged, counted = merge(failed_spans), merge(pieces)
    unknown_parts = (subtract((measured_from, judged_until), merge(up_spans + failed_merged))
                     if judged_until > measured_from else [])
    short_failed = _minus(failed_merged, counted)
    worst_extents = _holding(merge(unknown_parts + short_failed), unknown_parts)
    # a stretch with UP rounds on both sides that is shorter than the minimum duration could not
    # be an outage even if it had failed throughout (NEXON Vision SLA §2.2 "for 5 (five)
    # consecutive minutes or longer"; Haivision Streaming, Definitions: "a 12-minute period");
    # one beside an outage, or at the edge of what was judged, might be part of a longer run
    min_us = round(policy.min_duration * 1_000_000)
    edges = {measured_from, judged_until, *(p[0] for p in counted), *(p[1] for p in counted)}
    worst_extents = [x for x in worst_extents if x[0] in edges or x[1] in edges or (x[1] - x[0]) // _US >= min_us]
    undecided_parts = _minus(_minus(worst_extents, counted), allowed)
    undecided = _sum_minutes(undecided_parts)
    joined_failures = _sum_minutes(_minus(_holding(short_failed, worst_extents, inside=True), allowed))
    unknown_excluded = _sum_minutes(unknown_parts) - _sum_minutes(_minus(unknown_parts, allowed))
    evidence = bool(up_spans or failed_spans or pieces)
    if not evidence and total > 0:
        notes.append("no evidence in this period: no round has a verdict, so availability is unknown")
    if joined_failures:
        notes.append(f"{_fmt(number(joined_failures))} minutes of failed rounds in runs too short to be an outage "
                     "touch unknown time: the worst case counts them as downtime")

    # 5. availability and the verdict, best case and worst case
    best = worst = None
    if total > 0:
        best = (total - downtime) / total * 100
        worst = (total - downtime - undecided) / total * 100
    availability = best if evidence else None
    availability_worst = worst if evidence else None
    allowed_downtime = met = remaining = verdict = undetermined_by = None
    if target is not None and total > 0:
        allowed_downtime = total * (100 - rules.exact(target)) / 100
        remaining = allowed_downtime - downtime
        verdict = _judge(downtime, undecided, allowed_downtime, evidence)
        met = {"met": True, "missed": False}.get(verdict)
        if verdict == "undetermined":
            undetermined_by = remaining

    report = {
        "policy": policy.name,
        "policy_hash": policy.content_hash(),
        "description": policy.description,
        "period": period,
        "period_start": iso(period_start),
        "period_end": iso(period_end),
        "timezone": policy.timezone,
        "commenced": iso(policy.commenced),
        "measured_from": iso(measured_from),
        "as_of": iso(now),
        "complete": now is None or now >= period_end,
        "interval_seconds": number(policy.interval),
        "min_duration_minutes": number(Fraction(round(policy.min_duration * 1_000_000), 60_000_000)),
        "total_minutes": number(total),
        "outage_minutes": number(outage_minutes),
        "excluded_minutes": number(excluded_minutes),
        "downtime_minutes": number(downtime),
        "unknown_minutes": number(unknown_minutes),
        "unknown_excluded_minutes": number(unknown_excluded),
        # minutes of DEGRADED rounds, counted apart: inside outages only where the policy counts
        # them as down (degraded_counts_as_down), otherwise available time
        "degraded_minutes": number(degraded_minutes),
        "degraded_counts_as_down": policy.degraded_counts_as_down,
        "undecided_minutes": number(undecided),
        "availability_percent": _pct(availability),
        "availability_worst_percent": _pct(availability_worst),
        "target_percent": target,
        "allowed_downtime_minutes": number(allowed_downtime),
        "remaining_budget_minutes": number(remaining),
        "met": met,
        "verdict": verdict,
        "undetermined_by_minutes": number(undetermined_by),
        "data_coverage_percent": _pct(coverage),
        "rounds": {"total": expected_rounds, **counts},
    }
    if policy.guaranteed_percent is not None:
        guaranteed = rules.exact(policy.guaranteed_percent)
        report["guaranteed_percent"] = policy.guaranteed_percent
        report["guaranteed_met"] = (None if availability is None else True if availability_worst >= guaranteed
                                    else False if availability < guaranteed else None)

    # 6. credit and claim
    worst_case = {"downtime": downtime + undecided, "availability": worst, "undecided": undecided,
                  "verdict": verdict, "evidence": evidence,
                  "pieces": [p for o in outages for p in o["unexcluded"]] + undecided_parts,
                  "outages": merge(pieces + worst_extents), "allowed": allowed}
    credit, per_outage = _credit(policy, period, period_end, total, downtime, best, met, outages,
                                 fee, history, report, worst_case)
    report["outages"] = []
    for outage, extra in zip(outages, per_outage):
        window = outage["window"]
        entry = {
            "start": iso(window.start), "end": iso(window.end), "open": window.end is None,
            "minutes": number(outage["minutes"]), "excluded_minutes": number(outage["excluded"]),
            "qualifying_minutes": number(outage["qualifying"]),
            "window_minutes": number(minutes_between(
                window.start, window.end if window.end is not None else max(now or until, until))),
            "evidence": evidence_summary(window),
        }
        if outage["piece"] != (window.start, window.end):
            entry["counted_from"], entry["counted_until"] = iso(outage["piece"][0]), iso(outage["piece"][1])
        if include_evidence:
            entry["rounds"] = [r.to_dict() for r in window.rounds]
        entry.update(extra)
        report["outages"].append(entry)
    report["maintenance"] = _maintenance_entries(judgements, period_start, period_end, pieces)
    report["credit"] = credit
    report["notes"] = notes
    return report


def _maintenance_entries(judgements: Sequence[Judgement], period_start, period_end, pieces) -> list[dict]:
    out = []
    for judgement in sorted(judgements, key=lambda j: (j.announcement.start, j.announcement.recorded)):
        ann = judgement.announcement
        if not (ann.start < period_end and ann.end > period_start) and not (period_start <= ann.start < period_end):
            continue
        mine = merge(judgement.allowed)
        entry = judgement.to_dict()
        entry["excluded_minutes"] = number(sum((overlap_minutes(p, mine) for p in pieces), Fraction(0)))
        out.append(entry)
    return out


def _credit(policy: Policy, period: str, period_end, total, downtime, availability, met, outages,
            fee, history, report, worst: dict) -> tuple[dict, list[dict]]:
    """The credit block and, for per-outage rules, each outage's own credit and deadline.

    `availability` and `downtime` are the best case (undecided minutes up); `worst` holds the
    worst case (undecided minutes down): its downtime, availability, non-excluded outage pieces
    and outage extents (an unknown stretch beside an outage lengthens it). Credit fields:

      percent / days          the credit on the best case (as before: unknown minutes were up).
      percent_worst /
      days_worst / dates_worst the credit on the worst case: what the customer may be owed if the
                              undecided minutes were down.
      depends_on_unknown      true when the two differ: the credit is a range, not a figure.
      below_guaranteed        (tiered) true / false / null (undetermined), like `met`.
      amount_worst            with a fee: the worst-case credit in the fee's currency.
    """
    rule = policy.credit
    credit: dict = {"type": rule.type}
    notes = [rule.note] if rule.note else []
    per_outage: list[dict] = [{} for _ in outages]
    deadline = claim_deadline(policy, period_end=period_end) if policy.claim.type != "after_outage_end" else None
    month_days = days_in_month(period)
    best_percent = worst_percent = Fraction(0)
    as_json = number                 # how this rule has always written its percent

    if rule.type == "none":
        credit["percent"] = 0
    elif rule.type == "tiered_percent":
        def tier(value):
            return (rules.tiered_percent(value, policy.guaranteed_percent, rule.bands)
                    if value is not None else (Fraction(0), None))
        best_percent, band = tier(availability)
        worst_percent, worst_band = tier(worst["availability"])
        # Numezis SLA §7: a credit "only if actual monthly availability falls below the guaranteed
        # threshold": below when even the best case is, not below when even the worst case is not
        below = True if band is not None else (False if worst_band is None else None)
        credit.update(percent=number(best_percent), guaranteed_percent=policy.guaranteed_percent,
                      below_guaranteed=below)
        if band is not None:
            floor = f">= {band.at_least} %" if band.at_least is not None else "below the last band"
            notes.append(f"availability below the guaranteed {policy.guaranteed_percent} %, band {floor}")
    elif rule.type == "half_day_per_started_hour":
        result = rules.half_day_per_started_hour(downtime, month_days, rule.days_per_started_hour)
        result_worst = rules.half_day_per_started_hour(worst["downtime"], month_days, rule.days_per_started_hour)
        best_percent, worst_percent, as_json = result["percent"], result_worst["percent"], _pct
        credit.update(days=number(result["days"]), percent=_pct(result["percent"]),
                      started_hours=result["started_hours"], days_in_month=month_days, capped=result["capped"],
                      days_worst=number(result_worst["days"]))
        if result["capped"]:
            notes.append(f"capped at one month of credit ({month_days} days)")
    elif rule.type == "day_per_outage_day":
        pieces = [p for o in outages for p in o["unexcluded"]]
        result = rules.day_per_outage_day(pieces, policy.tz, rule.max_days)
        result_worst = rules.day_per_outage_day(worst["pieces"], policy.tz, rule.max_days)
        best_percent = Fraction(result["days"], month_days) * 100
        worst_percent, as_json = Fraction(result_worst["days"], month_days) * 100, _pct
        credit.update(days=result["days"], dates=[d.isoformat() for d in result["dates"]],
                      percent=_pct(best_percent), days_in_month=month_days, capped=result["capped"],
                      days_worst=result_worst["days"], dates_worst=[d.isoformat() for d in result_worst["dates"]])
        if result["capped"]:
            notes.append(f"capped at {rule.max_days} days of fees")
    elif rule.type == "per_outage_increment":
        increment = Fraction(round(rule.increment * 1_000_000), 60_000_000)
        percents = []
        earliest = None
        for outage, extra in zip(outages, per_outage):
            percent = rules.per_outage_increment(outage["qualifying"], increment, rule.percent_per_increment)
            percents.append(percent)
            window_deadline = claim_deadline(policy, outage_end=outage["window"].end)
            extra.update(credit_percent=number(percent), **window_deadline)
            if window_deadline["claim_deadline_at"] and (earliest is None or
                                                         window_deadline["claim_deadline_at"] < earliest["claim_deadline_at"]):
                earliest = window_deadline
        total_percent, capped = rules.capped_total(percents, rule.max_percent)
        # Nexcess SLA, "SLA Credits": outages are never combined, but in the worst case an unknown
        # stretch beside an outage was part of it, and an unknown stretch alone was one of its own
        worst_percents = [rules.per_outage_increment(minutes_between(*extent) - overlap_minutes(extent, worst["allowed"]),
                                                     increment, rule.percent_per_increment)
                          for extent in worst["outages"]]
        best_percent, worst_percent = total_percent, rules.capped_total(worst_percents, rule.max_percent)[0]
        credit.update(percent=number(total_percent), capped=capped,
                      outages_with_credit=sum(1 for p in percents if p > 0))
        if capped:
            notes.append(f"capped at {rule.max_percent} % of the monthly fee")
        deadline = earliest or {"claim_deadline": None, "claim_deadline_at": None,
                                "claim_rule": f"{policy.claim.days} calendar days after the outage ends"}
        if earliest:
            notes.append("each outage has its own claim deadline; this is the earliest")
    elif rule.type == "pro_rata":
        percent, capped = rules.pro_rata(downtime, total, rule.max_percent)
        best_percent, as_json = percent, _pct
        worst_percent = rules.pro_rata(worst["downtime"], total, rule.max_percent)[0]
        credit.update(percent=_pct(percent), capped=capped)
        if rule.termination_after_months:
            below = None if met is None else not met
            if worst["verdict"] == "undetermined":
                reason = (f"undetermined: no evidence for {period}" if not worst["evidence"] else
                          f"undetermined: {_fmt(number(worst['undecided']))} unknown minutes decide whether "
                          f"{period} fell below {policy.target_percent} %")
            else:
                reason = None
            right, why = rules.termination_right(period, below, history, rule.termination_after_months,
                                                 policy.target_percent, undetermined_note=reason)
            report["termination_right"] = right
            report["termination_note"] = why
    credit["percent_worst"] = as_json(worst_percent)
    credit["depends_on_unknown"] = worst_percent != best_percent
    if credit["depends_on_unknown"]:
        notes.append(f"depends on {_fmt(number(worst['undecided']))} unknown minutes: {_fmt(credit['percent'])} % "
                     f"if they were up, {_fmt(credit['percent_worst'])} % if they were down")
    if fee is not None and credit.get("percent") is not None:
        # the share of the month's fee the credit is worth, in the fee's own currency
        credit["fee"] = fee
        credit["amount"] = round(float(rules.exact(fee) * rules.exact(credit["percent"]) / 100), 2)
        credit["amount_worst"] = (credit["amount"] if not credit["depends_on_unknown"] else
                                  round(float(rules.exact(fee) * rules.exact(credit["percent_worst"]) / 100), 2))
    credit.update(deadline)
    credit["notes"] = notes
    return credit, per_outage


def verify_claim(policy: Policy, start: datetime, end: datetime, windows: Sequence[Window],
                 maintenance: Sequence[Announcement], *, now: datetime | None = None,
                 rounds: Sequence[Round] | RoundSpans | None = None) -> dict:
    """A Claimed Outage [start, end) checked against the verified windows (Nexcess: "Nexcess will
    review Claimed Outages against Verified Outages"; "Qualifying Outage Minutes ... minus any
    Excluded Minutes").

    1. Verified minutes: the claim's overlap with each window (an open window counts to `now`,
       or to the claim's end).
    2. Excluded minutes: the verified part that allowed maintenance covers.
    3. Per window, the credit the rule gives (per-outage rules are never combined), and the claim
       deadline (Nexcess: 7 days after the claimed outage's end; otherwise the policy's rule for
       the month in which the claim ends).
    4. With `rounds` (the rounds over the claim), every claimed minute is accounted for, once, in
       this order (minutes, and intervals [{start, end, minutes}] in UTC):
         verified_minutes / verified_intervals            inside a verified outage window
         refuted_minutes / refuted_intervals              an UP round: evidence the service was up
         short_failure_minutes / short_failure_intervals  FAILED rounds of a run too short to be an
                                                          outage (the policy's min_duration)
         unknown_minutes / unknown_intervals              no evidence: UNKNOWN rounds, no rounds, or
                                                          after `now`
       unknown_excluded_minutes: the part of unknown_minutes inside allowed maintenance.
       `rounds` may be a RoundSpans (the same answer, per span).
       Without `rounds` the four are not split: refuted, short-failure and unknown fields are null
       and `evidence_note` says why; unverified_minutes (claimed − verified) is always given.
    """
    if end <= start:
        raise ValueError("the claimed outage must end after it starts")
    judgements = judge_maintenance(policy, maintenance)
    allowed = allowed_intervals(judgements)
    supporting = []
    verified = excluded = Fraction(0)
    rule = policy.credit
    percents = []
    verified_pieces = []
    for window in sorted(windows, key=lambda w: w.start):
        window_end = window.end if window.end is not None else (now or end)
        piece = clip((window.start, window_end), start, end)
        if piece is None:
            continue
        minutes = minutes_between(*piece)
        excl = overlap_minutes(piece, allowed)
        verified += minutes
        excluded += excl
        verified_pieces.append(piece)
        entry = window.to_dict(until=now or end)
        entry.update(verified_minutes=number(minutes), excluded_minutes=number(excl),
                     qualifying_minutes=number(minutes - excl), evidence_summary=evidence_summary(window))
        if rule.type == "per_outage_increment":
            increment = Fraction(round(rule.increment * 1_000_000), 60_000_000)
            percent = rules.per_outage_increment(minutes - excl, increment, rule.percent_per_increment)
            percents.append(percent)
            entry["credit_percent"] = number(percent)
        supporting.append(entry)
    out = {
        "policy": policy.name, "policy_hash": policy.content_hash(),
        "claimed_start": iso(start), "claimed_end": iso(end),
        "claimed_minutes": number(minutes_between(start, end)),
        "verified_minutes": number(verified), "excluded_minutes": number(excluded),
        "qualifying_minutes": number(verified - excluded),
        "verified": verified > 0,
        "windows": supporting,
        "maintenance": [j.to_dict() for j in judgements if j.announcement.start < end and j.announcement.end > start],
    }
    if rule.type == "per_outage_increment":
        total, capped = rules.capped_total(percents, rule.max_percent)
        out["credit_percent"] = number(total)
        out["credit_capped"] = capped
    out.update(_claim_evidence(policy, (start, end), merge(verified_pieces), rounds, allowed))
    if policy.claim.type == "after_outage_end":
        out.update(claim_deadline(policy, outage_end=end))
    else:
        period = period_of(end - _US, policy.tz)
        out["period"] = period
        out.update(claim_deadline(policy, period_end=month_bounds(period, policy.tz)[1]))
    return out


def _claim_evidence(policy: Policy, claim: tuple[datetime, datetime], verified: list, rounds, allowed) -> dict:
    """Every minute of the claim in one of four parts: verified (in an outage window), refuted
    (UP rounds), short failures (FAILED rounds outside windows) and unknown (no evidence).

    Nexcess SLA: "Nexcess will review Claimed Outages against Verified Outages" (Approved
    Procedure, 3) using "its monitoring logs"; a claimed minute the logs say nothing about is
    neither verified nor refuted, and the claim says which minutes those are.
    """
    out = {"unverified_minutes": number(_sum_minutes([claim]) - _sum_minutes(verified)),
           "verified_intervals": _intervals(verified)}
    if rounds is None:
        out.update(refuted_minutes=None, refuted_intervals=None, short_failure_minutes=None,
                   short_failure_intervals=None, unknown_minutes=None, unknown_intervals=None,
                   unknown_excluded_minutes=None,
                   evidence_note="no rounds were given: the unverified minutes are not split into "
                                 "refuted and unknown")
        return out
    step = timedelta(seconds=policy.interval)
    seen: set = set()
    up_spans: list = []
    failed_spans: list = []
    if isinstance(rounds, RoundSpans):
        _grid_of(policy, rounds)
        # the same spans as round by round below: a span's slots, clipped to the claim, are one interval
        for first, stop, verdict in rounds.spans:
            span = clip((first, stop), *claim) if verdict != Verdict.UNKNOWN else None
            if span is not None:
                _add_span(failed_spans if is_down(policy, verdict) else up_spans, *span)
        rounds = ()
    for rnd in sorted(rounds, key=lambda r: r.slot):
        if rnd.slot in seen:
            continue
        seen.add(rnd.slot)
        if rnd.verdict == Verdict.UNKNOWN:
            continue
        span = clip((rnd.slot, rnd.slot + step), *claim)
        if span is not None:
            _add_span(failed_spans if is_down(policy, rnd.verdict) else up_spans, *span)
    up_merged, failed_merged = merge(up_spans), merge(failed_spans)
    refuted = _minus(up_merged, verified)
    short = _minus(failed_merged, verified)
    unknown = _minus([claim], merge(verified + up_merged + failed_merged))
    out.update(refuted_minutes=number(_sum_minutes(refuted)), refuted_intervals=_intervals(refuted),
               short_failure_minutes=number(_sum_minutes(short)), short_failure_intervals=_intervals(short),
               unknown_minutes=number(_sum_minutes(unknown)), unknown_intervals=_intervals(unknown),
               unknown_excluded_minutes=number(_sum_minutes(unknown) - _sum_minutes(_minus(unknown, allowed))))
    return out


# -- rendering --------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return out


def render_text(report: dict) -> str:
    """A readable summary and tables of outages and maintenance, for a person."""
    lines = [f"SLA report: {report['policy']} ({report['policy_hash']}), period {report['period']} "
             f"({report['timezone']})",
             f"  {report['period_start']} to {report['period_end']}"
             + ("" if report.get("complete", True) else f", as of {report['as_of']}"), ""]
    facts = [
        ("Total minutes (T)", report["total_minutes"]),
        ("Outage minutes", report["outage_minutes"]),
        ("Excluded (maintenance)", report["excluded_minutes"]),
        ("Downtime (N)", report["downtime_minutes"]),
        ("Availability %", report["availability_percent"]),
        ("Availability worst %", report.get("availability_worst_percent")),
        ("Target %", report["target_percent"]),
    ]
    if "guaranteed_percent" in report:
        facts.append(("Guaranteed %", report["guaranteed_percent"]))
    facts += [
        ("Allowed downtime (min)", report["allowed_downtime_minutes"]),
        ("Budget left (min)", report["remaining_budget_minutes"]),
        ("Met", report["met"]),
        ("Data coverage %", report["data_coverage_percent"]),
        ("Unknown minutes", report["unknown_minutes"]),
    ]
    if report.get("degraded_minutes"):
        facts.append(("Degraded minutes", report["degraded_minutes"]))
    if "termination_right" in report:
        right = report["termination_right"]
        facts.append(("Termination right", "undetermined" if right is None else right))
    width = max(len(k) for k, _ in facts)
    lines += [f"  {k.ljust(width)}  {_fmt(v)}" for k, v in facts]
    verdict = _verdict_line(report)
    if verdict:
        lines += ["", verdict]
    lines += ["", f"Outages ({len(report['outages'])})"]
    if report["outages"]:
        per_outage = any("credit_percent" in o for o in report["outages"])
        headers = ["start", "end", "minutes", "excluded", "qualifying", "rounds"]
        if per_outage:
            headers += ["credit %", "claim by"]
        rows = []
        for o in report["outages"]:
            row = [o["start"], o["end"] or "open", o["minutes"], o["excluded_minutes"], o["qualifying_minutes"],
                   o["evidence"]["rounds"]]
            if per_outage:
                row += [o.get("credit_percent"), o.get("claim_deadline")]
            rows.append(row)
        lines += ["  " + l for l in _table(headers, rows)]
    lines += ["", f"Maintenance ({len(report['maintenance'])})"]
    if report["maintenance"]:
        rows = [[m["kind"], m["start"], m["end"], m["recorded_at"], m.get("stated_announced") or "-", m["compliant"],
                 m["excluded_minutes"], ", ".join(r["rule"] for r in m["broken_rules"]) or "-"]
                for m in report["maintenance"]]
        lines += ["  " + l for l in _table(["kind", "start", "end", "recorded", "stated", "compliant", "excluded",
                                            "broken"], rows)]
        if any(m.get("recorded_at_from") == "announced" for m in report["maintenance"]):
            lines.append("  Offline records without recorded_at: the file's own `announced` is taken as when each "
                         "was recorded (the operator's records).")
        for m in report["maintenance"]:
            notice = m.get("notice")
            if notice and notice["met"]:
                lines.append(f"  {m['kind']} {m['start']}: notice met ({notice['rule']}): {notice['detail']}")
            for r in m["broken_rules"]:
                lines.append(f"  {m['kind']} {m['start']}: {r['rule']}: {r['detail']}")
    c = report["credit"]
    amount = f", {c['percent']} %" if c.get("percent") is not None else ""
    days = f", {c['days']} days of fees" if c.get("days") is not None else ""
    money = f", amount {c['amount']}" if c.get("amount") is not None else ""
    if c.get("depends_on_unknown"):
        # a range: the best case (unknown minutes up) to the worst case (unknown minutes down)
        amount = f", {_fmt(c['percent'])} % to {_fmt(c['percent_worst'])} %" if c.get("percent") is not None else ""
        days = f", {c['days']} to {c['days_worst']} days of fees" if c.get("days_worst") is not None else days
        money = f", amount {c['amount']} to {c['amount_worst']}" if c.get("amount_worst") is not None else money
    lines += ["", f"Credit: {c['type']}{days}{amount}{money}"]
    lines.append(f"  claim by {c['claim_deadline']} (before {c['claim_deadline_at']}; {c['claim_rule']})"
                 if c.get("claim_deadline") else f"  claim deadline: none ({c.get('claim_note') or c.get('claim_rule')})")
    for note in c.get("notes", []) + report.get("notes", []):
        lines.append(f"  note: {note}")
    if report.get("termination_note"):
        lines.append(f"  termination: {report['termination_note']}")
    return "\n".join(lines) + "\n"


def _verdict_line(report: dict) -> str | None:
    """"Verdict: undetermined (150 unknown minutes decide it: ...; best 99.7685 %, worst 99.4213 %)"."""
    verdict = report.get("verdict")
    if verdict is None:
        return None
    undecided = report.get("undecided_minutes") or 0
    best, worst = report.get("availability_percent"), report.get("availability_worst_percent")
    if best is None:
        return f"Verdict: undetermined (no evidence in the period; {_fmt(report['unknown_minutes'])} unknown minutes)"
    if verdict == "undetermined":
        return (f"Verdict: undetermined ({_fmt(undecided)} unknown minutes decide it: missed if more than "
                f"{_fmt(report['undetermined_by_minutes'])} of them were down; best {_fmt(best)} %, "
                f"worst {_fmt(worst)} %)")
    if not undecided:
        return f"Verdict: {verdict}"
    if verdict == "met":
        return f"Verdict: met (even with all {_fmt(undecided)} unknown minutes down: worst {_fmt(worst)} %)"
    return f"Verdict: missed (even with all {_fmt(undecided)} unknown minutes up: best {_fmt(best)} %)"


def render_claim_text(claim: dict) -> str:
    """A claimed outage against the verified windows, for a person."""
    lines = [f"Claim check: {claim['policy']} ({claim['policy_hash']})",
             f"  claimed {claim['claimed_start']} to {claim['claimed_end']}", ""]
    facts = [("Claimed minutes", claim["claimed_minutes"]), ("Verified minutes", claim["verified_minutes"]),
             ("Excluded minutes", claim["excluded_minutes"]), ("Qualifying minutes", claim["qualifying_minutes"]),
             ("Verified", claim["verified"])]
    if "credit_percent" in claim:
        facts.append(("Credit %", claim["credit_percent"]))
    if claim.get("unknown_minutes") is not None:
        facts += [("Refuted (up)", claim["refuted_minutes"]), ("Failed, too short", claim["short_failure_minutes"]),
                  ("Unknown minutes", claim["unknown_minutes"])]
    width = max(len(k) for k, _ in facts)
    lines += [f"  {k.ljust(width)}  {_fmt(v)}" for k, v in facts]
    if claim.get("unknown_minutes") is not None:
        parts = sorted((iv["start"], label, iv) for key, label in (
            ("verified_intervals", "verified"), ("refuted_intervals", "refuted (up)"),
            ("short_failure_intervals", "failed, too short"), ("unknown_intervals", "unknown")) for iv in claim[key])
        lines += ["", f"Claimed time by evidence ({len(parts)})"]
        lines += ["  " + l for l in _table(["part", "start", "end", "minutes"],
                                           [[label, iv["start"], iv["end"], iv["minutes"]] for _, label, iv in parts])]
    elif claim.get("evidence_note"):
        lines += ["", f"  note: {claim['evidence_note']}"]
    lines += ["", f"Supporting windows ({len(claim['windows'])})"]
    if claim["windows"]:
        rows = []
        for w in claim["windows"]:
            failed = sorted({a for r in w["evidence"] for c in r["components"].values() for a in c["failed"]})
            rows.append([w["start"], w["end"] or "open", w["verified_minutes"], w["excluded_minutes"],
                         w["qualifying_minutes"], w.get("credit_percent"), ", ".join(failed)])
        lines += ["  " + l for l in _table(["start", "end", "verified", "excluded", "qualifying", "credit %",
                                            "agents that failed"], rows)]
    for m in claim.get("maintenance", []):
        broken = ", ".join(r["rule"] for r in m["broken_rules"]) or "none"
        lines.append(f"  maintenance {m['kind']} {m['start']} to {m['end']}: compliant {_fmt(m['compliant'])}"
                     f" (broken rules: {broken})")
    lines.append("")
    lines.append(f"Claim by {claim['claim_deadline']} (before {claim['claim_deadline_at']}; {claim['claim_rule']})"
                 if claim.get("claim_deadline") else
                 f"Claim deadline: none ({claim.get('claim_note') or claim.get('claim_rule')})")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["row", "policy", "period", "start", "end", "minutes", "excluded_minutes", "qualifying_minutes",
               "availability_percent", "target_percent", "met", "credit_percent", "credit_days", "claim_deadline",
               "availability_worst_percent", "verdict", "undecided_minutes", "credit_percent_worst",
               "depends_on_unknown"]


def render_csv(report: dict) -> str:
    """One `outage` row per outage, then one `summary` row for the period (same columns;
    start/end of the summary are the period's bounds, minutes are T's outage minutes). The last
    five columns (the worst case, the verdict, the undecided minutes, the worst-case credit and
    whether the credit depends on unknown minutes) are filled on the summary row only."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for o in report["outages"]:
        writer.writerow(["outage", report["policy"], report["period"], o["start"], o["end"] or "",
                         o["minutes"], o["excluded_minutes"], o["qualifying_minutes"], "", "", "",
                         o.get("credit_percent", ""), "", o.get("claim_deadline", "") or "", "", "", "", "", ""])
    c = report["credit"]
    writer.writerow(["summary", report["policy"], report["period"], report["period_start"], report["period_end"],
                     report["outage_minutes"], report["excluded_minutes"], report["downtime_minutes"],
                     report["availability_percent"], report["target_percent"],
                     "" if report["met"] is None else str(report["met"]).lower(),
                     "" if c.get("percent") is None else c["percent"],
                     "" if c.get("days") is None else c["days"], c.get("claim_deadline") or "",
                     "" if report.get("availability_worst_percent") is None else report["availability_worst_percent"],
                     report.get("verdict") or "", report.get("undecided_minutes", ""),
                     "" if c.get("percent_worst") is None else c["percent_worst"],
                     "" if c.get("depends_on_unknown") is None else str(c["depends_on_unknown"]).lower()])
    return buffer.getvalue()
