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

__all__ = ["build_report", "verify_claim", "render_text", "render_csv", "render_claim_text", "evidence_summary",
           "CSV_COLUMNS"]

UTC = timezone.utc
_US = timedelta(microseconds=1)


def _pct(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def evidence_summary(window: Window) -> dict:
    """Per component: rounds it failed, and per agent how often it failed, succeeded, was missing."""
    components: dict[str, dict] = {}
    for rnd in window.rounds:
        for part in rnd.components:
            entry = components.setdefault(part.component, {"failed_rounds": 0, "agents": {}})
            if part.verdict == Verdict.FAILED:
                entry["failed_rounds"] += 1
            for field, names in (("failed", part.failed), ("succeeded", part.succeeded), ("missing", part.missing)):
                for agent in names:
                    counts = entry["agents"].setdefault(agent, {"failed": 0, "succeeded": 0, "missing": 0})
                    counts[field] += 1
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


def build_report(policy: Policy, period: str, rounds: Sequence[Round], windows: Sequence[Window],
                 maintenance: Sequence[Announcement], *, now: datetime | None = None, history=None,
                 fee: float | None = None, include_evidence: bool = False) -> dict:
    """The report of one period under one policy.

    1. Period: [local month start, next local month start); measured from `commenced` if later.
       `until` = min(period end, now): open windows and data coverage count up to it.
    2. Maintenance is judged (all announcements given, so monthly budgets see earlier ones).
    3. Each window's part inside [measured_from, until) is its minutes in this period; the part
       overlapping allowed maintenance is excluded; the rest is qualifying downtime (N).
    4. Availability, allowed downtime and `met` at the target; data coverage from the rounds.
    5. The credit rule and the claim deadline.
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

    # 4. availability and coverage
    availability = (total - downtime) / total * 100 if total > 0 else None
    allowed_downtime = met = remaining = None
    if target is not None and total > 0:
        allowed_downtime = total * (100 - rules.exact(target)) / 100
        remaining = allowed_downtime - downtime
        met = downtime <= allowed_downtime
    # with `now` inside the period, the slot that contains it has not finished: judge up to its start
    judged_until = until if until == period_end else _slot_floor(until, policy.interval)
    judged_until = max(judged_until, measured_from)
    expected_rounds = _slots_overlapping(measured_from, judged_until, policy.interval)
    known = {}
    counts = {"up": 0, "failed": 0, "unknown": 0}
    step = timedelta(seconds=policy.interval)
    known_minutes = Fraction(0)
    for rnd in rounds:
        if rnd.slot + step <= measured_from or rnd.slot >= judged_until or rnd.slot in known:
            continue
        known[rnd.slot] = rnd.verdict
        if rnd.verdict != Verdict.UNKNOWN:
            known_minutes += minutes_between(max(rnd.slot, measured_from), min(rnd.slot + step, judged_until))
    for verdict in known.values():
        counts[Verdict(verdict).value] += 1
    counts["unknown"] += max(0, expected_rounds - len(known))  # slots nobody gave us are UNKNOWN
    coverage = (Fraction(counts["up"] + counts["failed"], expected_rounds) * 100) if expected_rounds else None
    unknown_minutes = minutes_between(measured_from, judged_until) - known_minutes

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
        "availability_percent": _pct(availability),
        "target_percent": target,
        "allowed_downtime_minutes": number(allowed_downtime),
        "remaining_budget_minutes": number(remaining),
        "met": met,
        "data_coverage_percent": _pct(coverage),
        "rounds": {"total": expected_rounds, **counts},
    }
    if policy.guaranteed_percent is not None:
        report["guaranteed_percent"] = policy.guaranteed_percent
        report["guaranteed_met"] = None if availability is None else availability >= rules.exact(policy.guaranteed_percent)

    # 5. credit and claim
    credit, per_outage = _credit(policy, period, period_end, total, downtime, availability, met, outages,
                                 fee, history, report)
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
    for judgement in sorted(judgements, key=lambda j: (j.announcement.start, j.announcement.announced)):
        ann = judgement.announcement
        if not (ann.start < period_end and ann.end > period_start) and not (period_start <= ann.start < period_end):
            continue
        mine = merge(judgement.allowed)
        entry = judgement.to_dict()
        entry["excluded_minutes"] = number(sum((overlap_minutes(p, mine) for p in pieces), Fraction(0)))
        out.append(entry)
    return out


def _credit(policy: Policy, period: str, period_end, total, downtime, availability, met, outages,
            fee, history, report) -> tuple[dict, list[dict]]:
    """The credit block and, for per-outage rules, each outage's own credit and deadline."""
    rule = policy.credit
    credit: dict = {"type": rule.type}
    notes = [rule.note] if rule.note else []
    per_outage: list[dict] = [{} for _ in outages]
    deadline = claim_deadline(policy, period_end=period_end) if policy.claim.type != "after_outage_end" else None
    month_days = days_in_month(period)

    if rule.type == "none":
        credit["percent"] = 0
    elif rule.type == "tiered_percent":
        percent, band = (rules.tiered_percent(availability, policy.guaranteed_percent, rule.bands)
                         if availability is not None else (Fraction(0), None))
        credit.update(percent=number(percent), guaranteed_percent=policy.guaranteed_percent,
                      below_guaranteed=bool(band))
        if band is not None:
            floor = f">= {band.at_least} %" if band.at_least is not None else "below the last band"
            notes.append(f"availability below the guaranteed {policy.guaranteed_percent} %, band {floor}")
    elif rule.type == "half_day_per_started_hour":
        result = rules.half_day_per_started_hour(downtime, month_days, rule.days_per_started_hour)
        credit.update(days=number(result["days"]), percent=_pct(result["percent"]),
                      started_hours=result["started_hours"], days_in_month=month_days, capped=result["capped"])
        if result["capped"]:
            notes.append(f"capped at one month of credit ({month_days} days)")
    elif rule.type == "day_per_outage_day":
        pieces = [p for o in outages for p in o["unexcluded"]]
        result = rules.day_per_outage_day(pieces, policy.tz, rule.max_days)
        credit.update(days=result["days"], dates=[d.isoformat() for d in result["dates"]],
                      percent=_pct(Fraction(result["days"], month_days) * 100), days_in_month=month_days,
                      capped=result["capped"])
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
        credit.update(percent=_pct(percent), capped=capped)
        if rule.termination_after_months:
            below = None if met is None else not met
            right, why = rules.termination_right(period, below, history, rule.termination_after_months,
                                                 policy.target_percent)
            report["termination_right"] = right
            report["termination_note"] = why
    if fee is not None and credit.get("percent") is not None:
        # the share of the month's fee the credit is worth, in the fee's own currency
        credit["fee"] = fee
        credit["amount"] = round(float(rules.exact(fee) * rules.exact(credit["percent"]) / 100), 2)
    credit.update(deadline)
    credit["notes"] = notes
    return credit, per_outage


def verify_claim(policy: Policy, start: datetime, end: datetime, windows: Sequence[Window],
                 maintenance: Sequence[Announcement], *, now: datetime | None = None) -> dict:
    """A Claimed Outage [start, end) checked against the verified windows (Nexcess: "Nexcess will
    review Claimed Outages against Verified Outages"; "Qualifying Outage Minutes ... minus any
    Excluded Minutes").

    1. Verified minutes: the claim's overlap with each window (an open window counts to `now`,
       or to the claim's end).
    2. Excluded minutes: the verified part that allowed maintenance covers.
    3. Per window, the credit the rule gives (per-outage rules are never combined), and the claim
       deadline (Nexcess: 7 days after the claimed outage's end; otherwise the policy's rule for
       the month in which the claim ends).
    """
    if end <= start:
        raise ValueError("the claimed outage must end after it starts")
    judgements = judge_maintenance(policy, maintenance)
    allowed = allowed_intervals(judgements)
    supporting = []
    verified = excluded = Fraction(0)
    rule = policy.credit
    percents = []
    for window in sorted(windows, key=lambda w: w.start):
        window_end = window.end if window.end is not None else (now or end)
        piece = clip((window.start, window_end), start, end)
        if piece is None:
            continue
        minutes = minutes_between(*piece)
        excl = overlap_minutes(piece, allowed)
        verified += minutes
        excluded += excl
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
    if policy.claim.type == "after_outage_end":
        out.update(claim_deadline(policy, outage_end=end))
    else:
        period = period_of(end - _US, policy.tz)
        out["period"] = period
        out.update(claim_deadline(policy, period_end=month_bounds(period, policy.tz)[1]))
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
    if "termination_right" in report:
        facts.append(("Termination right", report["termination_right"]))
    width = max(len(k) for k, _ in facts)
    lines += [f"  {k.ljust(width)}  {_fmt(v)}" for k, v in facts]
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
        rows = [[m["kind"], m["start"], m["end"], m["announced"], m["compliant"], m["excluded_minutes"],
                 ", ".join(r["rule"] for r in m["broken_rules"]) or "-"] for m in report["maintenance"]]
        lines += ["  " + l for l in _table(["kind", "start", "end", "announced", "compliant", "excluded", "broken"], rows)]
        for m in report["maintenance"]:
            for r in m["broken_rules"]:
                lines.append(f"  {m['kind']} {m['start']}: {r['rule']}: {r['detail']}")
    c = report["credit"]
    amount = f", {c['percent']} %" if c.get("percent") is not None else ""
    days = f", {c['days']} days of fees" if c.get("days") is not None else ""
    money = f", amount {c['amount']}" if c.get("amount") is not None else ""
    lines += ["", f"Credit: {c['type']}{days}{amount}{money}"]
    lines.append(f"  claim by {c['claim_deadline']} (before {c['claim_deadline_at']}; {c['claim_rule']})"
                 if c.get("claim_deadline") else f"  claim deadline: none ({c.get('claim_note') or c.get('claim_rule')})")
    for note in c.get("notes", []) + report.get("notes", []):
        lines.append(f"  note: {note}")
    if report.get("termination_note"):
        lines.append(f"  termination: {report['termination_note']}")
    return "\n".join(lines) + "\n"


def render_claim_text(claim: dict) -> str:
    """A claimed outage against the verified windows, for a person."""
    lines = [f"Claim check: {claim['policy']} ({claim['policy_hash']})",
             f"  claimed {claim['claimed_start']} to {claim['claimed_end']}", ""]
    facts = [("Claimed minutes", claim["claimed_minutes"]), ("Verified minutes", claim["verified_minutes"]),
             ("Excluded minutes", claim["excluded_minutes"]), ("Qualifying minutes", claim["qualifying_minutes"]),
             ("Verified", claim["verified"])]
    if "credit_percent" in claim:
        facts.append(("Credit %", claim["credit_percent"]))
    width = max(len(k) for k, _ in facts)
    lines += [f"  {k.ljust(width)}  {_fmt(v)}" for k, v in facts]
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
               "availability_percent", "target_percent", "met", "credit_percent", "credit_days", "claim_deadline"]


def render_csv(report: dict) -> str:
    """One `outage` row per outage, then one `summary` row for the period (same columns;
    start/end of the summary are the period's bounds, minutes are T's outage minutes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for o in report["outages"]:
        writer.writerow(["outage", report["policy"], report["period"], o["start"], o["end"] or "",
                         o["minutes"], o["excluded_minutes"], o["qualifying_minutes"], "", "", "",
                         o.get("credit_percent", ""), "", o.get("claim_deadline", "") or ""])
    c = report["credit"]
    writer.writerow(["summary", report["policy"], report["period"], report["period_start"], report["period_end"],
                     report["outage_minutes"], report["excluded_minutes"], report["downtime_minutes"],
                     report["availability_percent"], report["target_percent"],
                     "" if report["met"] is None else str(report["met"]).lower(),
                     "" if c.get("percent") is None else c["percent"],
                     "" if c.get("days") is None else c["days"], c.get("claim_deadline") or ""])
    return buffer.getvalue()
