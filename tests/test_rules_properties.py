"""Invariants of the evaluation core, checked with hypothesis (issue 3, "Tests")."""
from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.rules.model import Observation, Round, Verdict
from collector.rules.offline import evaluate_offline
from collector.rules.policy import load_policy
from collector.rules.report import build_report
from collector.rules.rounds import evaluate_rounds
from collector.rules.windows import find_windows, qualifies
from rules_support import utc

AGENTS = ("a", "b", "c", "d")
START = utc(2026, 11, 10, 10, 0)
SLOTS = 24
END = START + timedelta(minutes=SLOTS)

# majority with 2 reporting and a 3-minute minimum; explicit agents for `all` (with agents seen
# as the fallback, a new agent would make earlier rounds UNKNOWN; a fixed list keeps the property)
POLICIES = [
    load_policy("nexcess").with_overrides(min_duration="3m"),
    load_policy("nexcess").with_overrides(quorum={"mode": "all", "agents": list(AGENTS)}, min_duration="2m"),
    load_policy("nexcess").with_overrides(quorum={"mode": "k_of_n", "k": 2, "agents": list(AGENTS)}),
    load_policy("nexon-vision").with_overrides(min_duration="2m", quorum={"mode": "majority", "min_reporting": 1}),
]

CHECKS = ("transit", "cms", "api")
GRID = [(slot, agent, check) for slot in range(SLOTS) for agent in AGENTS for check in CHECKS]


def _grid(cells, extra):
    """One cell per (slot, agent, check): no report, success or failure (failures likelier, so
    that windows happen), sent up to 59 s late; plus a few extra attempts (retries)."""
    out = []
    for (slot, agent, check), (verdict, late) in zip(GRID, cells):
        if verdict is not None:
            out.append(Observation(agent, check, START + timedelta(minutes=slot, seconds=late), verdict))
    return out + extra


observation = st.builds(
    lambda agent, check, slot, late, ok: Observation(agent, check, START + timedelta(minutes=slot, seconds=late), ok),
    st.sampled_from(AGENTS), st.sampled_from(CHECKS), st.integers(0, SLOTS - 1), st.integers(0, 59), st.booleans())
observations = st.builds(
    _grid,
    st.lists(st.tuples(st.sampled_from([None, True, False, False, False]), st.integers(0, 59)),
             min_size=len(GRID), max_size=len(GRID)),
    st.lists(observation, max_size=20))
policies = st.sampled_from(POLICIES)


def downtime(policy, obs):
    rounds = evaluate_rounds(policy, obs, START, END)
    windows = find_windows(policy, rounds)
    return build_report(policy, "2026-11", rounds, windows, [])["downtime_minutes"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, observations, st.sampled_from(AGENTS), st.sampled_from(("transit", "cms", "api")),
       st.integers(0, SLOTS - 1))
def test_adding_a_failure_never_raises_availability(policy, obs, agent, check, slot):
    before = downtime(policy, obs)
    after = downtime(policy, obs + [Observation(agent, check, START + timedelta(minutes=slot), False)])
    assert after >= before


@settings(max_examples=100, deadline=None)
@given(policies, observations, st.integers(0, SLOTS - 1))
def test_an_unknown_round_never_creates_downtime(policy, obs, index):
    rounds = evaluate_rounds(policy, obs, START, END)
    changed = list(rounds)
    changed[index] = Round(rounds[index].slot, Verdict.UNKNOWN, rounds[index].components)
    report = lambda rs: build_report(policy, "2026-11", rs, find_windows(policy, rs), [])["downtime_minutes"]
    assert report(changed) <= report(rounds)


def pipeline(policy, obs):
    rounds = evaluate_rounds(policy, obs, START, END)
    return build_report(policy, "2026-11", rounds, find_windows(policy, rounds), [], include_evidence=True)


@settings(max_examples=100, deadline=None)
@given(policies, observations, st.randoms(use_true_random=False))
def test_shuffling_results_changes_nothing(policy, obs, rnd):
    shuffled = obs[:]
    rnd.shuffle(shuffled)
    assert pipeline(policy, shuffled) == pipeline(policy, obs)


@settings(max_examples=10, deadline=None)
@given(policies, observations, st.randoms(use_true_random=False))
def test_shuffling_results_changes_nothing_offline(policy, obs, rnd):
    shuffled = obs[:]
    rnd.shuffle(shuffled)
    assert evaluate_offline(policy, shuffled, "2026-11") == evaluate_offline(policy, obs, "2026-11")


@settings(max_examples=100, deadline=None)
@given(policies, observations, st.booleans())
def test_windows_are_sorted_disjoint_failed_and_qualifying(policy, obs, open_tail):
    rounds = evaluate_rounds(policy, obs, START, END)
    windows = find_windows(policy, rounds, open_tail=open_tail)
    step = timedelta(seconds=policy.interval)
    for w in windows:
        assert all(r.verdict == Verdict.FAILED for r in w.rounds) and qualifies(policy, len(w.rounds))
        assert [r.slot for r in w.rounds] == [w.start + i * step for i in range(len(w.rounds))]
        assert w.end is None or w.end == w.start + len(w.rounds) * step
    for a, b in zip(windows, windows[1:]):
        assert a.end is not None and a.end < b.start      # disjoint, sorted, and never touching
    failed_slots = {r.slot for r in rounds if r.verdict == Verdict.FAILED}
    assert {r.slot for w in windows for r in w.rounds} <= failed_slots


@settings(max_examples=60, deadline=None)
@given(policies, observations, st.integers(1, SLOTS - 1))
def test_live_evaluation_equals_offline(policy, obs, cut):
    """Results arriving in two batches (the second late, in any order) give the windows that all
    results at once give: evaluation depends on the set of results, not on their arrival."""
    first = [o for o in obs if o.ts < START + timedelta(minutes=cut)]
    late = [o for o in obs if o.ts >= START + timedelta(minutes=cut)]
    random.Random(cut).shuffle(late)
    live = find_windows(policy, evaluate_rounds(policy, first + late, START, END))
    offline = find_windows(policy, evaluate_rounds(policy, obs, START, END))
    assert live == offline
