"""Verdicts under missing evidence: a month report gives the best case (unknown minutes up), the
worst case (unknown minutes down) and a verdict that only says `met` or `missed` when both cases
agree. Figures are worked by hand from the contracts' own arithmetic."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from fractions import Fraction

import pytest

from collector.rules.model import Announcement, Round, Verdict
from collector.rules.offline import evaluate_offline
from collector.rules.periods import month_bounds
from collector.rules.policy import load_policy
from collector.rules.report import build_report, render_csv, render_text
from collector.rules.windows import find_windows
from rules_support import SIX, series, utc

M = timedelta(minutes=1)
H = timedelta(hours=1)
NEXON = load_policy("nexon-vision")


def month_rounds(policy, period, *, failed=(), unknown=(), until=None):
    """A round for every slot of the period: FAILED inside `failed`, none at all inside `unknown`
    (nobody reported: the report counts those slots as UNKNOWN), UP elsewhere. Ranges are
    (start, minutes)."""
    start, end = month_bounds(period, policy.tz)
    end = min(end, until) if until else end
    step = timedelta(seconds=policy.interval)
    special = {}
    for ranges, verdict in ((failed, Verdict.FAILED), (unknown, None)):
        for first, minutes in ranges:
            t = first
            while t < first + timedelta(minutes=minutes):
                special[t] = verdict
                t += step
    rounds, t = [], start
    while t < end:
        verdict = special.get(t, Verdict.UP)
        if verdict is not None:
            rounds.append(Round(t, verdict, ()))
        t += step
    return rounds


def report(policy, period, *, failed=(), unknown=(), maintenance=(), **kw):
    rounds = month_rounds(policy, period, failed=failed, unknown=unknown, until=kw.get("now"))
    return build_report(policy, period, rounds, find_windows(policy, rounds), maintenance, **kw)


DOWN = utc(2026, 11, 10, 10)      # where the verified outage starts
GAP = utc(2026, 11, 20, 3)        # where the agents fall silent


# NEXON Vision SLA §3.1 Availability = (T − N) / T × 100, §3.3 "a 30-day month = 43,200 minutes.
# At a 99.5% target, total unavailability must not exceed 216 minutes".
@pytest.mark.parametrize("down, silent, verdict, best, worst, undetermined_by", [
    # 100 down, 150 unknown: best 43,100 / 43,200 = 99.77 % meets, worst 42,950 / 43,200 = 99.42 %
    # does not: undetermined; it is missed only if more than 216 − 100 = 116 of them were down
    (100, 150, "undetermined", Fraction(43_100, 432), Fraction(42_950, 432), 116),
    # 0 down, 200 unknown: even all 200 down leaves 43,000 / 43,200 = 99.537 % >= 99.5: met
    (0, 200, "met", Fraction(100), Fraction(43_000, 432), None),
    # 217 down: even with every unknown minute up the budget is gone: missed
    (217, 500, "missed", Fraction(42_983, 432), Fraction(42_483, 432), None),
    # exactly the budget, nothing unknown: met; one unknown minute right after the outage decides
    # it (the outage may have lasted a minute longer)
    (216, 0, "met", Fraction(995, 10), Fraction(995, 10), None),
    (216, 1, "undetermined", Fraction(995, 10), Fraction(42_983, 432), 0),
])
def test_nexon_verdict_from_best_and_worst_case(down, silent, verdict, best, worst, undetermined_by):
    gap = DOWN + down * M if silent < 5 else GAP
    r = report(NEXON, "2026-11", failed=[(DOWN, down)] if down else (), unknown=[(gap, silent)] if silent else ())
    assert (r["downtime_minutes"], r["unknown_minutes"], r["undecided_minutes"]) == (down, silent, silent)
    assert r["availability_percent"] == pytest.approx(float(best))
    assert r["availability_worst_percent"] == pytest.approx(float(worst))
    assert r["verdict"] == verdict and r["undetermined_by_minutes"] == undetermined_by
    assert r["met"] is {"met": True, "missed": False, "undetermined": None}[verdict]


def test_nexon_hand_example_end_to_end_from_results():
    # the same 100 + 150 minutes from raw results: two agents on cms and api all month, api
    # failing for 100 minutes, both agents silent on both components for 150 minutes
    def ok(check):
        def verdict(agent, t):
            if GAP <= t < GAP + 150 * M:
                return None
            return check == "cms" or not (DOWN <= t < DOWN + 100 * M)
        return verdict
    obs = [o for check in ("cms", "api") for o in series(check, utc(2026, 11, 1), utc(2026, 12, 1),
                                                         agents=SIX[:2], ok=ok(check))]
    r = evaluate_offline(NEXON, obs, "2026-11", [])
    assert (r["downtime_minutes"], r["unknown_minutes"], r["undecided_minutes"]) == (100, 150, 150)
    assert (r["verdict"], r["met"], r["undetermined_by_minutes"]) == ("undetermined", None, 116)
    assert round(r["availability_percent"], 2) == 99.77 and round(r["availability_worst_percent"], 2) == 99.42
    assert ("Verdict: undetermined (150 unknown minutes decide it: missed if more than 116 of them were down; "
            "best 99.7685 %, worst 99.4213 %)") in render_text(r)


@pytest.mark.parametrize("preset, period", [
    ("nexon-vision", "2026-11"), ("nexcess", "2026-11"), ("nexgen-gpu", "2026-11"),
    ("numezis-business", "2026-10"), ("haivision-streaming", "2026-10"),
])
def test_month_without_evidence_has_no_availability(preset, period):
    # no round with a verdict in the whole month: "calculated ... by reference to our available
    # monitoring data" (NexGen Service Level Addendum §2.2) finds none; never 100 %
    r = evaluate_offline(load_policy(preset), [], period, [])
    assert r["availability_percent"] is None and r["availability_worst_percent"] is None
    assert r["verdict"] == "undetermined" and r["met"] is None
    assert r["unknown_minutes"] == r["total_minutes"]
    if "guaranteed_met" in r:
        assert r["guaranteed_met"] is None
    assert "Verdict: undetermined (no evidence in the period" in render_text(r)


def test_month_just_begun_has_no_availability():
    # as of the month's first instant nothing has been measured yet: no figure, not 100 %
    r = evaluate_offline(NEXON, [], "2026-11", [], now=utc(2026, 11, 1))
    assert r["availability_percent"] is None and r["verdict"] == "undetermined" and r["unknown_minutes"] == 0


def test_unknown_minutes_inside_allowed_maintenance_are_not_in_the_worst_case():
    # NEXON Vision SLA §4.1: maintenance announced 24 h ahead does not count as unavailability,
    # so whatever happened in the silent minutes inside it, they are excluded either way
    maintenance = [Announcement("scheduled", GAP - 48 * H, GAP, GAP + 150 * M)]
    r = report(NEXON, "2026-11", failed=[(DOWN, 100)], unknown=[(GAP - 30 * M, 180)], maintenance=maintenance)
    assert (r["unknown_minutes"], r["unknown_excluded_minutes"], r["undecided_minutes"]) == (180, 150, 30)
    assert r["verdict"] == "met"                                   # 100 + 30 <= 216
    assert r["availability_worst_percent"] == pytest.approx((43_200 - 130) / 432)


@pytest.mark.parametrize("failed, silent, undecided, verdict", [
    # NEXON Vision SLA §2.2 "for 5 (five) consecutive minutes or longer". 214 minutes down leave 2.
    # 4 failed minutes then 1 silent minute: had it failed, the run would be 5 minutes and all 5
    # would count, so the worst case is 214 + 5 = 219 > 216 (1 unknown minute alone would say met)
    ([(DOWN, 214), (utc(2026, 11, 12, 8), 4)], [(utc(2026, 11, 12, 8, 4), 1)], 5, "undetermined"),
    # the same silent minute far from any failure, UP on both sides: even failed it is 1 minute,
    # not an outage under §2.2, so it cannot be downtime and the month is met
    ([(DOWN, 214)], [(utc(2026, 11, 12, 8, 4), 1)], 0, "met"),
    # 3 silent minutes beside the verified outage: they would lengthen it
    ([(DOWN, 214)], [(DOWN + 214 * M, 3)], 3, "undetermined"),
    # 5 silent minutes alone could be an outage of their own
    ([(DOWN, 214)], [(utc(2026, 11, 12, 8), 5)], 5, "undetermined"),
])
def test_worst_case_follows_the_minimum_duration(failed, silent, undecided, verdict):
    r = report(NEXON, "2026-11", failed=failed, unknown=silent)
    assert r["downtime_minutes"] == 214 and r["undecided_minutes"] == undecided and r["verdict"] == verdict


@pytest.mark.parametrize("preset, period, down", [
    ("nexon-vision", "2026-11", 30), ("nexcess", "2026-11", 40), ("nexgen-cpu", "2026-11", 432),
    ("numezis-business", "2026-10", 224), ("haivision-streaming", "2026-10", 12),
    ("numezis-starter", "2026-10", 1000),
])
def test_without_unknown_minutes_best_and_worst_coincide(preset, period, down):
    # every minute reported: the new figures repeat the old ones, and the old ones are unchanged
    p = load_policy(preset)
    start = month_bounds(period, p.tz)[0] + timedelta(days=9, hours=10)
    r = report(p, period, failed=[(start, down)], fee=100)
    assert r["unknown_minutes"] == 0 and r["undecided_minutes"] == 0
    assert r["downtime_minutes"] == down
    assert r["availability_percent"] == pytest.approx((r["total_minutes"] - down) / r["total_minutes"] * 100)
    assert r["availability_worst_percent"] == r["availability_percent"]
    assert r["verdict"] == ("met" if r["met"] else "missed") and r["undetermined_by_minutes"] is None
    c = r["credit"]
    assert c["percent_worst"] == c["percent"] and c["depends_on_unknown"] is False
    assert c.get("amount_worst") == c.get("amount")
    assert not any("unknown" in note for note in c["notes"] + r["notes"])


@pytest.mark.parametrize("failed, silent, guaranteed_met", [
    # Numezis SLA §3 guaranteed 99.5 % for Business; October in Zurich is 44,700 minutes
    (200, 0, True),       # 44,500 / 44,700 = 99.553 %
    (200, 100, None),     # worst 44,400 / 44,700 = 99.329 %: it depends on the 100 minutes
    (300, 50, False),     # best 44,400 / 44,700 < 99.5 whatever they were
    (100, 100, True),     # worst 44,500 / 44,700 still >= 99.5
])
def test_guaranteed_level_is_judged_on_both_cases(failed, silent, guaranteed_met):
    from rules_support import UTC
    from zoneinfo import ZoneInfo
    zurich = ZoneInfo("Europe/Zurich")
    at = datetime(2026, 10, 5, 1, tzinfo=zurich).astimezone(UTC)
    r = report(load_policy("numezis-business"), "2026-10", failed=[(at, failed)],
               unknown=[(at + 2 * H + failed * M, silent)] if silent else ())
    assert r["total_minutes"] == 44_700 and r["guaranteed_met"] is guaranteed_met


def test_text_report_says_the_verdict():
    met = report(NEXON, "2026-11", unknown=[(GAP, 200)])
    assert "Verdict: met (even with all 200 unknown minutes down: worst 99.537 %)" in render_text(met)
    missed = report(NEXON, "2026-11", failed=[(DOWN, 217)], unknown=[(GAP, 10)])
    assert "Verdict: missed (even with all 10 unknown minutes up: best 99.4977 %)" in render_text(missed)
    plain = report(NEXON, "2026-11", failed=[(DOWN, 30)])
    text = render_text(plain)
    assert "\nVerdict: met\n" in text and "Availability worst %    99.9306" in text


def test_csv_summary_has_the_worst_case_and_the_verdict():
    r = report(NEXON, "2026-11", failed=[(DOWN, 100)], unknown=[(GAP, 150)])
    rows = list(csv.DictReader(io.StringIO(render_csv(r))))
    summary = rows[-1]
    assert summary["met"] == "" and summary["verdict"] == "undetermined" and summary["undecided_minutes"] == "150"
    assert float(summary["availability_worst_percent"]) == pytest.approx(42_950 / 432)
    assert rows[0]["row"] == "outage" and rows[0]["verdict"] == ""
