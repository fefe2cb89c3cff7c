"""Degraded rounds in the evaluation core: the quorum of degraded agents makes a round DEGRADED,
components compose on FAILED < DEGRADED < UP, windows count DEGRADED rounds as down only under
`degraded_counts_as_down`, reports count them apart, and offline JSON Lines carry `degraded`."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from collector.rules.model import Observation, Verdict
from collector.rules.offline import InputError, evaluate_offline, read_results
from collector.rules.policy import Policy, load_policy
from collector.rules.rounds import ObservationIndex, component_verdict, compose, degraded_verdict, evaluate_rounds
from collector.rules.runs import runs_of
from collector.rules.windows import find_windows
from rules_support import utc

UP, DEGRADED, FAILED, UNKNOWN = Verdict.UP, Verdict.DEGRADED, Verdict.FAILED, Verdict.UNKNOWN
T0 = utc(2026, 11, 10, 10, 0)
MIN = timedelta(minutes=1)


def policy(mode: str = "majority", *, counts: bool = False, **quorum) -> Policy:
    return Policy(name="p", components=["web"], interval=60, quorum={"mode": mode, **quorum},
                  min_duration=0, target_percent=99.0, degraded_counts_as_down=counts)


# mode, failed, degraded, clean successes, missing, min_reporting, k -> verdict
DEGRADED_TABLE = [
    ("majority", 0, 2, 1, 0, 1, None, DEGRADED),   # most reporting agents were slow
    ("majority", 0, 1, 2, 0, 1, None, UP),         # one slow agent of three is not the quorum
    ("majority", 1, 1, 1, 0, 1, None, DEGRADED),   # UP (1 of 3 failed), but 2 of 3 no better than slow
    ("majority", 0, 3, 3, 0, 1, None, UP),         # exactly half is not more than half
    ("majority", 2, 2, 1, 0, 1, None, DEGRADED),   # not failed by quorum (2 of 5), but 4 of 5 no better than slow
    ("all", 0, 3, 0, 0, 1, None, DEGRADED),        # every expected agent was slow
    ("all", 1, 2, 0, 0, 1, None, DEGRADED),        # none had a clean success
    ("all", 0, 2, 1, 0, 1, None, UP),              # one clean success
    ("all", 0, 2, 0, 1, 1, None, UP),              # the missing agent might have been fine: undecided, UP
    ("k_of_n", 0, 3, 3, 0, 1, 3, DEGRADED),
    ("k_of_n", 1, 2, 3, 0, 1, 3, DEGRADED),        # 1 failed + 2 slow make k = 3
    ("k_of_n", 0, 2, 4, 0, 1, 3, UP),
    ("k_of_n", 0, 2, 3, 1, 1, 3, UP),              # the missing agent could make 3 slow: undecided, UP stays
]


@pytest.mark.parametrize("mode, failed, degraded, clean, missing, min_reporting, k, expected", DEGRADED_TABLE)
def test_degraded_quorum_table(mode, failed, degraded, clean, missing, min_reporting, k, expected):
    succeeded = degraded + clean
    verdict = component_verdict(mode, failed, succeeded, missing, min_reporting=min_reporting, k=k)
    assert verdict is UP  # the table's rounds are all UP by the quorum
    assert degraded_verdict(mode, verdict, failed, degraded, succeeded, missing,
                            min_reporting=min_reporting, k=k) == expected


def test_a_failed_round_is_never_merely_degraded():
    assert degraded_verdict("majority", FAILED, 3, 3, 3, 0) is FAILED
    assert degraded_verdict("all", UNKNOWN, 0, 2, 2, 1) is UNKNOWN


# compose mode, component verdicts -> service verdict
COMPOSE_TABLE = [
    ("any", (UP, DEGRADED), DEGRADED),
    ("any", (DEGRADED, FAILED), FAILED),
    ("any", (DEGRADED, UNKNOWN), UNKNOWN),     # the unknown component may have failed
    ("any", (FAILED, UNKNOWN), FAILED),
    ("any", (UP, UP), UP),
    ("all", (UP, DEGRADED), UP),               # one component is enough, and it is up
    ("all", (DEGRADED, FAILED), DEGRADED),
    ("all", (DEGRADED, UNKNOWN), UNKNOWN),     # the unknown component may have been up
    ("all", (FAILED, FAILED), FAILED),
    ("all", (UNKNOWN, UP), UP),
]


@pytest.mark.parametrize("mode, verdicts, expected", COMPOSE_TABLE)
def test_composition_puts_degraded_between_up_and_failed(mode, verdicts, expected):
    assert compose(mode, verdicts) == expected


def _obs(agent: str, minute: int, ok: bool, degraded: bool = False, check: str = "web") -> Observation:
    return Observation(agent, check, T0 + minute * MIN, ok, degraded)


def test_majority_of_reporting_agents_degraded_makes_a_degraded_round_with_its_agents_as_evidence():
    obs = [_obs("a1", 0, True, True), _obs("a2", 0, True, True), _obs("a3", 0, True),
           _obs("a1", 1, True, True), _obs("a2", 1, True), _obs("a3", 1, True)]
    r0, r1 = evaluate_rounds(policy(), obs, T0, T0 + 2 * MIN)
    assert (r0.verdict, r1.verdict) == (DEGRADED, UP)
    assert r0.components[0].degraded == ("a1", "a2") and r0.components[0].succeeded == ("a1", "a2", "a3")
    assert r0.to_dict()["components"]["web"]["degraded"] == ["a1", "a2"]
    assert r1.components[0].degraded == ("a1",)


def test_a_round_without_degraded_agents_keeps_its_evidence_shape():
    [r] = evaluate_rounds(policy(), [_obs("a1", 0, True), _obs("a2", 0, False)], T0, T0 + MIN)
    assert r.to_dict()["components"]["web"] == {"verdict": "up", "failed": ["a2"], "succeeded": ["a1"], "missing": []}


def test_an_agents_clean_success_in_a_slot_beats_its_degraded_one():
    # replayed or rolled-up evidence may hold two reports of one agent in a slot: the best one counts
    obs = [_obs("a1", 0, True, True), _obs("a1", 0, True), _obs("a2", 0, True, True), _obs("a2", 0, False)]
    [r] = evaluate_rounds(policy("all"), obs, T0, T0 + MIN)
    assert r.components[0].degraded == ("a2",) and r.components[0].failed == ()
    assert r.verdict is UP


def test_composed_service_is_degraded_when_one_needed_component_is():
    p = Policy(name="p", components=["web", "api"], interval=60, quorum={"mode": "majority"}, compose="any")
    obs = [_obs(a, 0, True, True, "web") for a in ("a1", "a2")] + [_obs(a, 0, True, False, "api") for a in ("a1", "a2")]
    [r] = evaluate_rounds(p, obs, T0, T0 + MIN)
    assert r.verdict is DEGRADED
    assert [c.verdict for c in r.components] == [DEGRADED, UP]


def _slow_stretch(minutes_slow: range, total: int = 10) -> list[Observation]:
    """Three agents, ok every minute; all three slow in `minutes_slow`."""
    return [_obs(a, m, True, m in minutes_slow) for m in range(total) for a in ("a1", "a2", "a3")]


@pytest.mark.parametrize("counts, windows", [
    (True, [(3, 7)]),    # degraded_counts_as_down: the 4 degraded rounds are an outage
    (False, []),         # default: a degraded round is up for outages
])
def test_degraded_counts_as_down_decides_whether_degraded_rounds_open_a_window(counts, windows):
    p = policy(counts=counts)
    rounds = evaluate_rounds(p, _slow_stretch(range(3, 7)), T0, T0 + 10 * MIN)
    found = find_windows(p, rounds)
    assert [((w.start - T0) // MIN, (w.end - T0) // MIN) for w in found] == windows


def test_a_run_of_failed_and_degraded_rounds_is_one_outage_where_degraded_counts_as_down():
    obs = _slow_stretch(range(3, 5)) + [_obs(a, m, False) for m in (5, 6) for a in ("a4", "a5", "a6", "a7")]
    for counts, expected in ((True, [(3, 7)]), (False, [(5, 7)])):
        p = policy(counts=counts)
        found = find_windows(p, evaluate_rounds(p, obs, T0, T0 + 10 * MIN))
        assert [((w.start - T0) // MIN, (w.end - T0) // MIN) for w in found] == expected


def test_runs_keep_degraded_stretches_for_the_status_page():
    p = policy()
    rounds = evaluate_rounds(p, _slow_stretch(range(3, 7)), T0, T0 + 10 * MIN)
    runs = runs_of(rounds, T0 + 10 * MIN)
    assert [((r.start - T0) // MIN, (r.end - T0) // MIN, r.verdict) for r in runs] == [(3, 7, DEGRADED)]


def _month_obs() -> list[Observation]:
    """Three agents every minute of 2 November 2026 (UTC), all of them slow from 10:00 to 11:30."""
    start = utc(2026, 11, 2, 0, 0)
    slow = range(600, 690)
    return [Observation(a, "web", start + m * MIN, True, m in slow) for m in range(1440) for a in ("a1", "a2", "a3")]


@pytest.mark.parametrize("counts, downtime", [(False, 0), (True, 90)])
def test_report_counts_degraded_rounds_and_minutes_apart(counts, downtime):
    p = policy(counts=counts).with_overrides(timezone="UTC")
    report = evaluate_offline(p, _month_obs(), "2026-11")
    assert report["rounds"]["degraded"] == 90
    assert report["degraded_minutes"] == 90
    assert report["degraded_counts_as_down"] is counts
    assert report["rounds"]["up"] == 1440 - 90
    assert report["downtime_minutes"] == downtime
    assert report["data_coverage_percent"] == pytest.approx(100 * 1440 / 43_200)
    assert len(report["outages"]) == (1 if counts else 0)
    if counts:
        evidence = report["outages"][0]["evidence"]["components"]["web"]
        assert evidence["failed_rounds"] == 0 and evidence["degraded_rounds"] == 90
        assert evidence["agents"]["a1"] == {"failed": 0, "succeeded": 90, "missing": 0, "degraded": 90}


def test_policy_without_the_option_keeps_its_rule_hash_and_with_it_gets_another():
    """A rule exported before the option existed (an evidence bundle's policy.rule has no
    `degraded_counts_as_down`) still hashes to the hash it was exported with."""
    base = load_policy("nexon-vision")
    old_rule = base.model_dump(mode="json")
    del old_rule["degraded_counts_as_down"]
    assert Policy.model_validate(old_rule).content_hash() == base.content_hash()
    assert base.with_overrides(degraded_counts_as_down=True).content_hash() != base.content_hash()


@pytest.mark.parametrize("preset", ["numezis-starter", "numezis-growth", "numezis-business", "numezis-enterprise"])
def test_numezis_presets_count_degraded_rounds_as_down(preset):
    # Numezis SaaS SLA §1: Downtime includes service that "does not meet the defined operating criteria"
    assert load_policy(preset).degraded_counts_as_down is True


def test_other_presets_do_not_count_degraded_rounds_as_down():
    assert load_policy("nexon-vision").degraded_counts_as_down is False
    assert load_policy("nexcess").degraded_counts_as_down is False


def _line(**fields) -> str:
    return json.dumps({"agent": "a1", "check": "web", "ts": "2026-11-10T10:00:00Z", "ok": True, **fields})


def test_offline_results_carry_an_optional_degraded():
    obs = read_results([_line(degraded=True), _line(agent="a2", degraded=False), _line(agent="a3"),
                        _line(agent="a4", degraded=None), _line(agent="a5", ok=False, error="timeout")])
    assert [o.degraded for o in obs] == [True, False, False, False, False]


@pytest.mark.parametrize("fields, message", [
    ({"degraded": "yes"}, "<input>:1: field 'degraded': expected true, false or null, got \"yes\""),
    ({"degraded": 1}, "<input>:1: field 'degraded': expected true, false or null, got 1"),
    ({"ok": False, "degraded": True}, "<input>:1: field 'degraded': a failed result is not degraded"),
])
def test_offline_results_refuse_a_bad_degraded_naming_the_line_and_field(fields, message):
    with pytest.raises(InputError) as err:
        read_results([_line(**fields)])
    assert str(err.value).startswith(message)


def test_index_rounds_equal_over_any_range_with_degraded_reports():
    obs = _slow_stretch(range(2, 4), total=6)
    index = ObservationIndex(policy(), obs)
    whole = index.rounds(T0, T0 + 6 * MIN)
    assert [r.verdict for r in whole] == [UP, UP, DEGRADED, DEGRADED, UP, UP]
    assert index.rounds(T0 + 2 * MIN, T0 + 4 * MIN) == whole[2:4]
