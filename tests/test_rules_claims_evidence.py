"""A Claimed Outage checked minute by minute against the monitoring evidence: which part is
verified (inside verified outage windows), which is refuted (UP rounds: the service was up),
which failed too briefly to be an outage, and which has no evidence at all."""
from __future__ import annotations

from datetime import timedelta

import pytest

from collector.rules.model import Announcement, Round, Verdict
from collector.rules.policy import load_policy
from collector.rules.report import render_claim_text, verify_claim
from collector.rules.windows import find_windows
from rules_support import utc

M = timedelta(minutes=1)
NEXCESS = load_policy("nexcess")
NEXON = load_policy("nexon-vision")


def timeline(policy, start, parts):
    """Rounds from `start`, one (verdict letter, minutes) part after another: U up, F failed,
    ? an UNKNOWN round in every slot, - no round at all."""
    step = timedelta(seconds=policy.interval)
    verdicts = {"U": Verdict.UP, "F": Verdict.FAILED, "?": Verdict.UNKNOWN}
    rounds, t = [], start
    for letter, minutes in parts:
        end = t + minutes * M
        while t < end:
            if letter != "-":
                rounds.append(Round(t, verdicts[letter], ()))
            t += step
    return rounds


def claim(policy, rounds, start, end, maintenance=(), **kw):
    return verify_claim(policy, start, end, find_windows(policy, rounds), maintenance, rounds=rounds, **kw)


def spans(intervals):
    return [(i["start"][11:16], i["end"][11:16], i["minutes"]) for i in intervals]


T0 = utc(2026, 11, 7, 9, 50)


@pytest.mark.parametrize("parts, verified, refuted, short, unknown", [
    # Nexcess SLA, Approved Procedure 3: "Nexcess will review Claimed Outages against Verified
    # Outages". Claim 09:50-11:00 over: up 10, failed 30 (a Verified Outage), silent 10, up 10,
    # UNKNOWN rounds 10
    ([("U", 10), ("F", 30), ("-", 10), ("U", 10), ("?", 10)],
     [("10:00", "10:30", 30)], [("09:50", "10:00", 10), ("10:40", "10:50", 10)], [],
     [("10:30", "10:40", 10), ("10:50", "11:00", 10)]),
    # up the whole time: every claimed minute refuted by evidence
    ([("U", 70)], [], [("09:50", "11:00", 70)], [], []),
    # nobody reported: nothing verified and nothing refuted either
    ([("-", 70)], [], [], [], [("09:50", "11:00", 70)]),
])
def test_claimed_minutes_split_by_evidence(parts, verified, refuted, short, unknown):
    v = claim(NEXCESS, timeline(NEXCESS, T0, parts), T0, T0 + 70 * M)
    assert spans(v["verified_intervals"]) == verified and spans(v["refuted_intervals"]) == refuted
    assert spans(v["short_failure_intervals"]) == short and spans(v["unknown_intervals"]) == unknown
    assert v["verified_minutes"] == sum(m for *_, m in verified)
    assert v["refuted_minutes"] == sum(m for *_, m in refuted)
    assert v["unknown_minutes"] == sum(m for *_, m in unknown)
    # every claimed minute is in exactly one part
    assert (v["verified_minutes"] + v["refuted_minutes"] + v["short_failure_minutes"] + v["unknown_minutes"]
            == v["claimed_minutes"] == 70)
    assert v["unverified_minutes"] == 70 - v["verified_minutes"]


def test_failures_too_short_to_be_an_outage_are_neither_verified_nor_refuted():
    # NEXON Vision SLA §2.2: unavailable only "for 5 (five) consecutive minutes or longer";
    # 3 failed minutes are evidence of failure, but not of an outage
    rounds = timeline(NEXON, T0, [("U", 10), ("F", 3), ("U", 7), ("F", 6), ("U", 4)])
    v = claim(NEXON, rounds, T0, T0 + 30 * M)
    assert spans(v["short_failure_intervals"]) == [("10:00", "10:03", 3)]
    assert spans(v["verified_intervals"]) == [("10:10", "10:16", 6)]
    assert (v["verified_minutes"], v["refuted_minutes"], v["short_failure_minutes"], v["unknown_minutes"]) == (6, 21, 3, 0)


def test_unknown_minutes_inside_allowed_maintenance_are_reported():
    # Nexcess SLA, "SLA Credit Exclusion" 1: emergency maintenance is excluded; the silent minutes
    # inside it would not count even had they been down
    emergency = Announcement("emergency", T0, T0 + 20 * M, T0 + 35 * M)
    rounds = timeline(NEXCESS, T0, [("U", 10), ("F", 10), ("-", 20), ("U", 30)])
    v = claim(NEXCESS, rounds, T0, T0 + 70 * M, [emergency])
    assert v["unknown_minutes"] == 20 and v["unknown_excluded_minutes"] == 15
    assert v["verified_minutes"] == 10 and v["excluded_minutes"] == 0


def test_claim_without_rounds_does_not_guess():
    # without the rounds nothing can be called refuted or unknown: null, and a note that says so
    rounds = timeline(NEXCESS, T0, [("U", 10), ("F", 30), ("U", 30)])
    v = verify_claim(NEXCESS, T0, T0 + 70 * M, find_windows(NEXCESS, rounds), [])
    assert v["verified_minutes"] == 30 and v["unverified_minutes"] == 40
    assert v["refuted_minutes"] is None and v["unknown_minutes"] is None and v["unknown_intervals"] is None
    assert "not split" in v["evidence_note"]
    assert "note: no rounds were given" in render_claim_text(v)


def test_claim_text_lists_the_parts():
    rounds = timeline(NEXCESS, T0, [("U", 10), ("F", 30), ("-", 10), ("U", 20)])
    text = render_claim_text(claim(NEXCESS, rounds, T0, T0 + 70 * M))
    # the first rows keep their place and width; the new ones follow
    assert "Verified minutes    30" in text and "Credit %            10" in text
    assert "Refuted (up)        30" in text and "Unknown minutes     10" in text
    assert "Claimed time by evidence (4)" in text
    assert "unknown       2026-11-07T10:30:00Z  2026-11-07T10:40:00Z  10" in text
