"""Reports and claims on rounds given as spans of one verdict (RoundSpans) equal the reports on
the same rounds one by one, whole dict for whole dict: maintenance partly over failed spans and
unknown gaps, DEGRADED rounds counted as down or not, month boundaries in a local time zone and
across DST changes, a service commenced mid-slot, a running month, short failed runs beside
unknown time."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.rules.model import Announcement, Round, Verdict
from collector.rules.periods import month_bounds
from collector.rules.policy import load_policy
from collector.rules.report import RoundSpans, build_report, verify_claim
from collector.rules.windows import find_windows
from rules_support import UTC, utc

UP, DEG, FAIL, UNK = Verdict.UP, Verdict.DEGRADED, Verdict.FAILED, Verdict.UNKNOWN
ZURICH = ZoneInfo("Europe/Zurich")
CHICAGO = ZoneInfo("America/Chicago")
M = timedelta(minutes=1)


def zh(*a) -> datetime:
    return datetime(*a, tzinfo=ZURICH).astimezone(UTC)


def ct(*a) -> datetime:
    return datetime(*a, tzinfo=CHICAGO).astimezone(UTC)


def one_by_one(interval: float, spans) -> list[Round]:
    """The oracle: a Round at each slot that starts in [start, end), walked slot by slot."""
    step = timedelta(seconds=interval)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out = []
    for start, end, verdict in spans:
        slot = epoch + (start - epoch) // step * step
        if slot < start:
            slot += step
        while slot < end:
            out.append(Round(slot, verdict, ()))
            slot += step
    return sorted(out, key=lambda r: r.slot)


def emergency(start: datetime, end: datetime) -> Announcement:
    return Announcement(kind="emergency", announced=None, start=start, end=end, recorded_at=start + M)


def scheduled(start: datetime, end: datetime) -> Announcement:
    return Announcement(kind="scheduled", announced=None, start=start, end=end, recorded_at=start - timedelta(days=2))


def filled(start: datetime, end: datetime, holes) -> list:
    """UP over [start, end) except the (start, end, verdict) holes, which may leave gaps (no round)."""
    out, cursor = [], start
    for lo, hi, verdict in sorted(holes, key=lambda h: h[0]):
        if verdict is not None:
            out.append((lo, hi, verdict))
        if lo > cursor:
            out.append((cursor, lo, UP))
        cursor = max(cursor, hi)
    if cursor < end:
        out.append((cursor, end, UP))
    return out


NUMEZIS = load_policy("numezis-business").with_overrides(interval="5m")      # Europe/Zurich, degraded is down
NUMEZIS_UP = NUMEZIS.with_overrides(degraded_counts_as_down=False)
NEXON = load_policy("nexon-vision")                                          # UTC, min_duration 5 m
NEXCESS = load_policy("nexcess")                                             # UTC, per-outage credit
STREAMING = load_policy("haivision-streaming")                               # Chicago, 6 m slots, 12 m runs
CPU = load_policy("nexgen-cpu").with_overrides(interval="5m")

Z0, Z1 = month_bounds("2026-10", ZURICH)          # 2026-09-30T22:00Z to 2026-10-31T23:00Z (DST ends Oct 25)
C0, C1 = month_bounds("2026-11", CHICAGO)         # DST ends Nov 1 in Chicago

# name, policy, period, spans, maintenance, now, claim, figures the case must show (so it tests something)
CASES = [
    ("maintenance partly over a failed span and a gap, degraded counted as down", NUMEZIS, "2026-10",
     filled(Z0, Z1, [(zh(2026, 10, 3, 10), zh(2026, 10, 3, 11), FAIL),
                     (zh(2026, 10, 3, 11), zh(2026, 10, 3, 11, 30), None),
                     (zh(2026, 10, 9, 4), zh(2026, 10, 9, 5), DEG),
                     (zh(2026, 10, 20, 0), zh(2026, 10, 20, 0, 10), UNK)]),
     [emergency(zh(2026, 10, 3, 10, 40), zh(2026, 10, 3, 11, 15))], None,
     (zh(2026, 10, 3, 9, 30), zh(2026, 10, 3, 12)),
     {"excluded_minutes": 20, "degraded_minutes": 60, "unknown_minutes": 40}),
    ("the same, degraded counted as up", NUMEZIS_UP, "2026-10",
     filled(Z0, Z1, [(zh(2026, 10, 3, 10), zh(2026, 10, 3, 11), FAIL),
                     (zh(2026, 10, 3, 11), zh(2026, 10, 3, 11, 30), None),
                     (zh(2026, 10, 9, 4), zh(2026, 10, 9, 5), DEG)]),
     [emergency(zh(2026, 10, 3, 10, 40), zh(2026, 10, 3, 11, 15))], None,
     (zh(2026, 10, 9, 3), zh(2026, 10, 9, 6)),
     {"excluded_minutes": 20, "degraded_minutes": 60, "downtime_minutes": 40}),
    ("spans across both edges of a local month, over the DST change", NUMEZIS, "2026-10",
     filled(Z0 - timedelta(hours=3), Z1 + timedelta(hours=3),
            [(Z0 - timedelta(hours=1), Z0 + timedelta(minutes=35), FAIL),
             (zh(2026, 10, 25, 1, 30), zh(2026, 10, 25, 3, 30), None),      # 3 real hours over 02:00-03:00 twice
             (Z1 - timedelta(minutes=20), Z1 + timedelta(hours=1), DEG)]),
     [], None, (Z1 - timedelta(hours=1), Z1 + timedelta(hours=1)),
     {"total_minutes": 31 * 1440 + 60, "unknown_minutes": 180}),
    ("a running month: judged up to a slot inside it, now later still", NUMEZIS, "2026-10",
     filled(Z0, zh(2026, 10, 14, 9, 7), [(zh(2026, 10, 14, 8), zh(2026, 10, 14, 8, 30), FAIL)]),
     [], zh(2026, 10, 14, 12, 3), (zh(2026, 10, 14, 7), zh(2026, 10, 14, 12)),
     {"complete": False, "downtime_minutes": 30}),
    ("commenced off the slot grid, failed span beside the start", CPU.with_overrides(
        commenced="2026-11-10T10:02:30Z"), "2026-11",
     filled(utc(2026, 11, 10, 10), utc(2026, 12, 1), [(utc(2026, 11, 10, 10), utc(2026, 11, 10, 10, 20), FAIL),
                                                      (utc(2026, 11, 20), utc(2026, 11, 20, 1), UNK)]),
     [scheduled(utc(2026, 11, 10, 10), utc(2026, 11, 10, 10, 5))], None,
     (utc(2026, 11, 10, 10), utc(2026, 11, 10, 11)), {"measured_from": "2026-11-10T10:02:30Z"}),
    ("commenced after now: the slot of commencement only", CPU.with_overrides(
        commenced="2026-11-10T10:02:30Z"), "2026-11",
     filled(utc(2026, 11, 1), utc(2026, 11, 10, 10, 5), []), [], utc(2026, 11, 9),
     (utc(2026, 11, 9), utc(2026, 11, 11)), {"total_minutes": 29637.5}),
    ("short failed runs beside unknown time and between UP rounds (min_duration 5 m)", NEXON, "2026-11",
     filled(utc(2026, 11, 1), utc(2026, 12, 1),
            [(utc(2026, 11, 4, 10), utc(2026, 11, 4, 10, 3), FAIL),
             (utc(2026, 11, 4, 10, 3), utc(2026, 11, 4, 10, 5), None),
             (utc(2026, 11, 5, 10), utc(2026, 11, 5, 10, 3), FAIL),
             (utc(2026, 11, 6, 0), utc(2026, 11, 6, 0, 2), None),
             (utc(2026, 11, 7, 0), utc(2026, 11, 7, 0, 9), FAIL)]),
     [], None, (utc(2026, 11, 4, 9, 55), utc(2026, 11, 5, 10, 10)), {"downtime_minutes": 9}),
    ("a short degraded run counted as down beside unknown time; a claim over UNKNOWN rounds",
     NEXON.with_overrides(degraded_counts_as_down=True), "2026-11",
     filled(utc(2026, 11, 1), utc(2026, 12, 1),
            [(utc(2026, 11, 4, 10), utc(2026, 11, 4, 10, 3), DEG),
             (utc(2026, 11, 4, 10, 3), utc(2026, 11, 4, 10, 5), UNK),
             (utc(2026, 11, 4, 10, 5), utc(2026, 11, 4, 10, 8), DEG)]),
     [], None, (utc(2026, 11, 4, 9, 50), utc(2026, 11, 4, 10, 20)),
     {"degraded_minutes": 6, "downtime_minutes": 0, "undecided_minutes": 8}),
    ("per-outage credits, maintenance over part of an outage", NEXCESS, "2026-11",
     filled(utc(2026, 11, 1), utc(2026, 12, 1), [(utc(2026, 11, 7, 9), utc(2026, 11, 7, 10, 10), FAIL),
                                                 (utc(2026, 11, 7, 10, 10), utc(2026, 11, 7, 10, 40), None),
                                                 (utc(2026, 11, 8, 0), utc(2026, 11, 8, 0, 2), FAIL)]),
     [scheduled(utc(2026, 11, 7, 9, 50), utc(2026, 11, 7, 10, 20))], None,
     (utc(2026, 11, 7, 8), utc(2026, 11, 7, 11)), {"excluded_minutes": 20}),
    ("6-minute slots in Chicago over the DST change, 12-minute outages", STREAMING, "2026-11",
     filled(C0, C1, [(ct(2026, 11, 1, 1, 30), ct(2026, 11, 1, 1, 54), FAIL),     # the first 01:30 (CDT)
                     (ct(2026, 11, 1, 1, 54), ct(2026, 11, 1, 3), None),
                     (ct(2026, 11, 3, 4), ct(2026, 11, 3, 4, 6), FAIL),
                     (ct(2026, 11, 30, 23, 0), ct(2026, 11, 30, 23, 30), UNK)]),
     [], None, (ct(2026, 11, 1, 1), ct(2026, 11, 1, 4)), {"total_minutes": 30 * 1440 + 60}),
    ("no rounds at all", NUMEZIS, "2026-10", [], [], None, (Z0, Z0 + timedelta(hours=1)),
     {"availability_percent": None, "verdict": "undetermined"}),
]


@pytest.mark.parametrize("name,policy,period,spans,maintenance,now,claim,figures", CASES, ids=[c[0] for c in CASES])
def test_report_and_claim_from_spans_equal_them_round_by_round(name, policy, period, spans, maintenance, now, claim,
                                                               figures):
    rounds = one_by_one(policy.interval, spans)
    given = RoundSpans(policy.interval, spans[::-1])           # any order
    windows = find_windows(policy, rounds)
    expected = build_report(policy, period, rounds, windows, maintenance, now=now)
    got = build_report(policy, period, given, windows, maintenance, now=now)
    assert got == expected
    for key, value in figures.items():
        assert got[key] == value, key
    claimed = verify_claim(policy, *claim, windows, maintenance, rounds=given)
    assert claimed == verify_claim(policy, *claim, windows, maintenance, rounds=rounds)
    assert claimed["unknown_minutes"] is not None


def test_spans_stand_for_the_slots_that_start_in_them():
    spans = RoundSpans(300, [(utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 10), FAIL),     # slot 00:05 only
                             (utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 20), FAIL),    # joined with it
                             (utc(2026, 1, 1, 0, 21), utc(2026, 1, 1, 0, 24), UP)])    # no slot starts there
    assert spans.spans == ((utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 20), FAIL),)
    assert len(spans) == 3
    assert [r.slot.minute for r in spans] == [5, 10, 15]


def test_spans_that_share_a_slot_are_refused():
    with pytest.raises(ValueError, match="spans share slots"):
        RoundSpans(60, [(utc(2026, 1, 1), utc(2026, 1, 1, 0, 10), UP), (utc(2026, 1, 1, 0, 8, 30), utc(2026, 1, 1, 1), FAIL)])


def test_spans_on_another_grid_than_the_policy_are_refused():
    spans = RoundSpans(120, [(Z0, Z1, UP)])
    with pytest.raises(ValueError, match="120 s grid"):
        build_report(NUMEZIS, "2026-10", spans, [], [])
    with pytest.raises(ValueError, match="120 s grid"):
        verify_claim(NUMEZIS, Z0, Z0 + M * 10, [], [], rounds=spans)
