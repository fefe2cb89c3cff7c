"""Outage windows: qualification by minimum duration on the whole run, UNKNOWN breaks a run,
open windows (issue 3, "Outage windows"; issue 2's first rule)."""
from __future__ import annotations

from datetime import timedelta

from collector.rules.model import ComponentRound, Observation, Round, Verdict
from collector.rules.policy import load_policy
from collector.rules.rounds import evaluate_rounds
from collector.rules.windows import find_windows
from rules_support import SIX, failing, series, utc

UP, FAILED, UNKNOWN = Verdict.UP, Verdict.FAILED, Verdict.UNKNOWN


def rounds_of(verdicts: str, start, interval=60):
    """'UFFU?' -> rounds with those verdicts (U up, F failed, ? unknown)."""
    table = {"U": UP, "F": FAILED, "?": UNKNOWN}
    return [Round(start + timedelta(seconds=i * interval), table[v], (ComponentRound("x", table[v], (), (), ()),))
            for i, v in enumerate(verdicts)]


def spans(windows):
    return [(w.start, w.end) for w in windows]


T0 = utc(2026, 11, 10, 10, 0)


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def test_nexon_five_failed_minutes_make_an_outage_four_do_not():
    p = load_policy("nexon-vision")
    assert spans(find_windows(p, rounds_of("UFFFFFU", T0))) == [(at(1), at(6))]
    assert find_windows(p, rounds_of("UFFFFUFFFFU", T0)) == []


def test_nexon_api_alone_for_five_minutes_counts_for_four_it_does_not():
    p = load_policy("nexon-vision")
    end = at(30)
    up_cms = series("cms", T0, end)
    five = up_cms + series("api", T0, end, ok=lambda a, t: not (at(10) <= t < at(15)))
    four = up_cms + series("api", T0, end, ok=lambda a, t: not (at(10) <= t < at(14)))
    assert spans(find_windows(p, evaluate_rounds(p, five, T0, end))) == [(at(10), at(15))]
    assert find_windows(p, evaluate_rounds(p, four, T0, end)) == []


def test_unknown_inside_a_run_breaks_it():
    p = load_policy("nexon-vision")
    # 3 failed, UNKNOWN, 3 failed: 6 failed minutes but no run of 5
    assert find_windows(p, rounds_of("FFF?FFF", T0)) == []
    # min_duration 0: every failed run counts, each on its own
    nexcess = load_policy("nexcess")
    assert spans(find_windows(nexcess, rounds_of("FFF?FFF", T0))) == [(at(0), at(3)), (at(4), at(7))]


def test_unknown_round_from_missing_agents_breaks_a_streaming_outage():
    p = load_policy("haivision-streaming")
    start = utc(2026, 10, 10, 12, 0)
    # all six fail for three rounds, but in the middle one agent is silent: UNKNOWN, no 12-minute run
    obs = [Observation(a, "streaming", start + timedelta(minutes=6 * i), False)
           for i in range(3) for a in SIX if not (i == 1 and a == "syd")]
    rounds = evaluate_rounds(p, obs, start, start + timedelta(minutes=18))
    assert [r.verdict for r in rounds] == [FAILED, UNKNOWN, FAILED]
    assert find_windows(p, rounds) == []


def test_streaming_two_failed_rounds_by_all_six_are_a_12_minute_outage_one_is_not():
    p = load_policy("haivision-streaming")
    start = utc(2026, 10, 10, 12, 0)
    end = start + timedelta(hours=1)
    two = series("streaming", start, end, interval=360,
                 ok=lambda a, t: not (start + timedelta(minutes=12) <= t < start + timedelta(minutes=24)))
    one = series("streaming", start, end, interval=360,
                 ok=lambda a, t: t != start + timedelta(minutes=12))
    [window] = find_windows(p, evaluate_rounds(p, two, start, end))
    assert (window.start, window.end, window.minutes) == (start + timedelta(minutes=12), start + timedelta(minutes=24), 12)
    assert find_windows(p, evaluate_rounds(p, one, start, end)) == []


def test_one_agent_failing_never_opens_a_window_for_all():
    p = load_policy("haivision-streaming")
    start = utc(2026, 10, 10, 0, 0)
    end = start + timedelta(days=1)
    obs = series("streaming", start, end, interval=360, ok=lambda a, t: a != "syd")
    rounds = evaluate_rounds(p, obs, start, end)
    assert len(rounds) == 240 and all(r.verdict == UP for r in rounds)
    assert find_windows(p, rounds) == []


def test_window_is_first_failed_slot_to_last_failed_slot_plus_interval():
    p = load_policy("nexcess")
    obs = series("transit", T0, at(20), ok=lambda a, t: not (at(3) <= t < at(11)))
    [w] = find_windows(p, evaluate_rounds(p, obs, T0, at(20)))
    assert (w.start, w.end, w.minutes, len(w.rounds)) == (at(3), at(11), 8, 8)
    assert all(r.verdict == FAILED for r in w.rounds)


def test_run_across_midnight_is_one_window():
    p = load_policy("nexon-vision")
    midnight = utc(2026, 11, 11, 0, 0)
    rounds = rounds_of("UFFFFFFU", midnight - timedelta(minutes=4))   # 23:57 .. 00:03 failed
    [w] = find_windows(p, rounds)
    assert (w.start, w.end) == (midnight - timedelta(minutes=3), midnight + timedelta(minutes=3))


def test_open_tail():
    p = load_policy("nexon-vision")
    [w] = find_windows(p, rounds_of("UUFFFFF", T0), open_tail=True)
    assert (w.start, w.end, w.minutes) == (at(2), None, None)
    assert w.minutes_until(at(9)) == 7
    assert w.to_dict(until=at(9))["minutes"] == 7 and w.to_dict()["end"] is None
    # an open run qualifies as soon as it covers the minimum, not before
    assert find_windows(p, rounds_of("UUFFFF", T0), open_tail=True) == []
    # without open_tail the same run is closed at the last failed slot + I
    [closed] = find_windows(p, rounds_of("UUFFFFF", T0))
    assert closed.end == at(7)


def test_a_gap_in_the_slots_breaks_a_run():
    p = load_policy("nexcess")
    rounds = rounds_of("FF", T0) + rounds_of("FF", at(3))
    assert spans(find_windows(p, rounds)) == [(at(0), at(2)), (at(3), at(5))]


def test_unsorted_rounds_are_put_in_order():
    p = load_policy("nexon-vision")
    rounds = rounds_of("UFFFFFU", T0)
    assert find_windows(p, list(reversed(rounds))) == find_windows(p, rounds)


def test_window_evidence_dict():
    p = load_policy("nexcess")
    obs = failing("transit", T0, 2, agents=("a", "b")) + [Observation("c", "transit", T0, True)]
    [w] = find_windows(p, evaluate_rounds(p, obs, T0, at(3)))
    d = w.to_dict()
    assert d["start"] == "2026-11-10T10:00:00Z" and d["end"] == "2026-11-10T10:02:00Z" and d["minutes"] == 2
    assert d["evidence"][0] == {"slot": "2026-11-10T10:00:00Z", "verdict": "failed", "components": {
        "transit": {"verdict": "failed", "failed": ["a", "b"], "succeeded": ["c"], "missing": []}}}
    assert d["evidence"][1]["components"]["transit"] == {
        "verdict": "failed", "failed": ["a", "b"], "succeeded": [], "missing": ["c"]}
