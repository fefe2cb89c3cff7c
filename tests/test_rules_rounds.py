"""Rounds: slots, an agent's verdict in a slot, quorum per component, composition (issue 3)."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from collector.rules.model import Observation, Verdict
from collector.rules.policy import load_policy
from collector.rules.rounds import component_verdict, compose, evaluate_rounds, slot_of
from rules_support import SIX, failing, series, utc

UP, FAILED, UNKNOWN = Verdict.UP, Verdict.FAILED, Verdict.UNKNOWN


@pytest.mark.parametrize("ts, interval, slot", [
    (utc(2026, 11, 10, 10, 0, 0), 60, utc(2026, 11, 10, 10, 0, 0)),
    (utc(2026, 11, 10, 10, 0, 59, 999999), 60, utc(2026, 11, 10, 10, 0, 0)),
    (utc(2026, 11, 10, 10, 1, 3), 60, utc(2026, 11, 10, 10, 1, 0)),          # an agent 3 s late
    (utc(2026, 11, 10, 10, 5, 59), 360, utc(2026, 11, 10, 10, 0, 0)),        # 6-minute slots
    (utc(2026, 11, 10, 10, 6, 0), 360, utc(2026, 11, 10, 10, 6, 0)),
    (utc(2026, 11, 10, 10, 0, 1), 2, utc(2026, 11, 10, 10, 0, 0)),
    (utc(2026, 11, 10, 10, 0, 0, 300000), 0.25, utc(2026, 11, 10, 10, 0, 0, 250000)),
])
def test_slot_is_floor_since_the_epoch(ts, interval, slot):
    assert slot_of(ts, interval) == slot


def test_slot_uses_the_instant_not_the_wall_clock():
    from datetime import datetime, timezone
    plus2 = timezone(timedelta(hours=2))
    assert slot_of(datetime(2026, 11, 10, 12, 0, 30, tzinfo=plus2), 60) == utc(2026, 11, 10, 10, 0)


# mode, failed, succeeded, missing, min_reporting, k -> verdict
QUORUM_TABLE = [
    ("all", 6, 0, 0, 1, None, FAILED),
    ("all", 5, 1, 0, 1, None, UP),
    ("all", 5, 0, 1, 1, None, UNKNOWN),      # one expected agent missing and none succeeded
    ("all", 1, 5, 0, 1, None, UP),           # one agent failing never fails the round
    ("all", 0, 0, 6, 1, None, UNKNOWN),      # no reports at all: UNKNOWN, never UP
    ("majority", 4, 2, 0, 2, None, FAILED),
    ("majority", 3, 3, 0, 2, None, UP),      # exactly half is not more than half
    ("majority", 2, 1, 3, 2, None, FAILED),  # missing agents do not count against the majority
    ("majority", 1, 0, 5, 2, None, UNKNOWN),  # fewer than min_reporting report
    ("majority", 0, 1, 5, 2, None, UNKNOWN),
    ("majority", 2, 0, 4, 2, None, FAILED),
    ("majority", 0, 0, 6, 1, None, UNKNOWN),
    ("k_of_n", 3, 3, 0, 1, 3, FAILED),
    ("k_of_n", 2, 4, 0, 1, 3, UP),
    ("k_of_n", 2, 3, 1, 1, 3, UNKNOWN),      # the missing agent could make it 3
    ("k_of_n", 1, 3, 1, 1, 3, UP),           # 1 + 1 missing < 3
    ("k_of_n", 0, 0, 6, 1, 3, UNKNOWN),
]


@pytest.mark.parametrize("mode, failed, succeeded, missing, min_reporting, k, verdict", QUORUM_TABLE)
def test_quorum_table(mode, failed, succeeded, missing, min_reporting, k, verdict):
    assert component_verdict(mode, failed, succeeded, missing, min_reporting=min_reporting, k=k) == verdict


@pytest.mark.parametrize("mode, parts, verdict", [
    ("any", [FAILED, UP], FAILED), ("any", [UP, UP], UP), ("any", [UP, UNKNOWN], UNKNOWN),
    ("any", [FAILED, UNKNOWN], FAILED), ("all", [FAILED, FAILED], FAILED), ("all", [FAILED, UP], UP),
    ("all", [FAILED, UNKNOWN], UNKNOWN), ("all", [UNKNOWN, UP], UP), ("all", [UNKNOWN, UNKNOWN], UNKNOWN),
])
def test_composition_table(mode, parts, verdict):
    assert compose(mode, parts) == verdict


def test_any_success_in_a_slot_makes_the_agent_succeed():
    p = load_policy("haivision-streaming")
    t = utc(2026, 10, 10, 12, 0)
    obs = [Observation(a, "streaming", t, False) for a in SIX]
    obs.append(Observation("ams", "streaming", t + timedelta(seconds=200), True))   # a retry in the same slot
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=6))
    assert rnd.verdict == UP
    assert rnd.components[0].succeeded == ("ams",)
    assert rnd.components[0].failed == ("fra", "iad", "nrt", "sin", "syd")


def test_every_slot_gets_a_round_and_empty_slots_are_unknown():
    p = load_policy("nexon-vision")
    start = utc(2026, 11, 10, 10, 0)
    obs = series("cms", start, start + timedelta(minutes=2)) + series("api", start, start + timedelta(minutes=2))
    rounds = evaluate_rounds(p, obs, start, start + timedelta(minutes=5))
    assert [r.slot for r in rounds] == [start + timedelta(minutes=i) for i in range(5)]
    assert [r.verdict for r in rounds] == [UP, UP, UNKNOWN, UNKNOWN, UNKNOWN]


def test_evidence_lists_failed_succeeded_missing_agents():
    p = load_policy("haivision-streaming")
    t = utc(2026, 10, 10, 12, 0)
    obs = [Observation(a, "streaming", t, False) for a in SIX[:5]]
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=6))
    part = rnd.components[0]
    assert rnd.verdict == UNKNOWN                       # five failed, the sixth silent
    assert part.failed == SIX[:5] and part.succeeded == () and part.missing == ("?",)


def test_explicit_expected_agents_come_first_and_others_are_ignored():
    p = load_policy("nexcess")
    t = utc(2026, 11, 10, 12, 0)
    obs = [Observation("a", "transit", t, False), Observation("b", "transit", t, False),
           Observation("intruder", "transit", t, True)]
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=1), expected_by_component={"transit": ["a", "b", "c"]})
    part = rnd.components[0]
    assert (part.failed, part.succeeded, part.missing) == (("a", "b"), (), ("c",))
    assert rnd.verdict == FAILED


def test_quorum_agents_list_in_the_policy():
    p = load_policy("nexcess").with_overrides(quorum={"mode": "all", "agents": ["a", "b"]})
    t = utc(2026, 11, 10, 12, 0)
    obs = [Observation("a", "transit", t, False), Observation("x", "transit", t, True)]
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=1))
    assert rnd.verdict == UNKNOWN and rnd.components[0].missing == ("b",)


def test_without_a_list_the_agents_seen_are_expected():
    p = load_policy("nexcess").with_overrides(quorum={"mode": "all", "min_reporting": 1})
    t = utc(2026, 11, 10, 12, 0)
    obs = [Observation("a", "transit", t, False), Observation("b", "transit", t, False),
           Observation("a", "transit", t + timedelta(minutes=1), False)]
    rounds = evaluate_rounds(p, obs, t, t + timedelta(minutes=2))
    assert [r.verdict for r in rounds] == [FAILED, UNKNOWN]
    assert rounds[1].components[0].missing == ("b",)


def test_checks_outside_the_policy_do_not_count():
    p = load_policy("nexcess")
    t = utc(2026, 11, 10, 12, 0)
    obs = failing("web", t, 1) + series("transit", t, t + timedelta(minutes=1))
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=1))
    assert rnd.verdict == UP and [c.component for c in rnd.components] == ["transit"]


def test_late_and_out_of_order_results_give_the_same_rounds():
    p = load_policy("nexon-vision")
    start = utc(2026, 11, 10, 10, 0)
    obs = (series("cms", start, start + timedelta(minutes=30), ok=lambda a, t: not (a in SIX[:4] and t.minute % 7 == 0))
           + series("api", start, start + timedelta(minutes=30), ok=lambda a, t: None if a == "syd" else t.minute % 5 != 0))
    expected = evaluate_rounds(p, obs, start, start + timedelta(minutes=30))
    late = [Observation(o.agent, o.check, o.ts + timedelta(seconds=7), o.ok) for o in obs]  # started 7 s late
    shuffled = late[:]
    random.Random(3).shuffle(shuffled)
    assert evaluate_rounds(p, shuffled, start, start + timedelta(minutes=30)) == expected
    assert {r.verdict for r in expected} == {UP, FAILED}


def test_api_failing_alone_fails_the_nexon_round():
    p = load_policy("nexon-vision")
    t = utc(2026, 11, 10, 10, 0)
    obs = series("cms", t, t + timedelta(minutes=1)) + failing("api", t, 1)
    [rnd] = evaluate_rounds(p, obs, t, t + timedelta(minutes=1))
    assert rnd.verdict == FAILED
    assert {c.component: c.verdict for c in rnd.components} == {"cms": UP, "api": FAILED}
