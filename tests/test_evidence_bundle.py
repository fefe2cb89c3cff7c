"""Evidence bundles made as agents and the collector make them (evidence.build), verified offline
(evidence.verify, `uptime-verify`), and every way of cheating with one caught and named.

The scenario: policy numezis-business (majority of at least 2 agents, 99.9 %, planned maintenance
on 72 hours' notice) over one component probed every 5 minutes by three agents from 9 to 11
November 2026; an hour's outage on all agents; a half-hour outage inside announced maintenance;
a second announcement recorded and then cancelled; agent a2 rotates its key midway and the old
key is revoked after. Agents ship four results a batch, each statement naming the one before.
"""
from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.rules import load_policy
from evidence import canonical, merkle
from evidence.build import AgentSigner, EvidenceKeeper, MemoryLog, bundle_from_observations, result_for
from evidence.bundle import parse_bundle, save_bundle
from evidence.checkpoint import format_vkey, parse_vkey
from evidence.keys import generate_private_key, key_id, public_key_text
from evidence.verify import NotVerified, main, verify_bundle

UTC = timezone.utc
PERIOD = "2026-11"
AGENTS = ("a1", "a2", "a3")
T0 = datetime(2026, 11, 9, tzinfo=UTC)
T1 = datetime(2026, 11, 11, tzinfo=UTC)
OUTAGE = (datetime(2026, 11, 10, 3, tzinfo=UTC), datetime(2026, 11, 10, 4, tzinfo=UTC))
IN_MAINTENANCE = (datetime(2026, 11, 10, 12, tzinfo=UTC), datetime(2026, 11, 10, 12, 30, tzinfo=UTC))
ROTATION = datetime(2026, 11, 10, 6, tzinfo=UTC)
REVOCATION = datetime(2026, 11, 10, 7, tzinfo=UTC)
NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _policy():
    return load_policy("numezis-business", components=["app"], interval="5m")


def _maintenance_record(n: int, start: datetime, hours: float, recorded_at: datetime) -> dict:
    return {"id": n, "policy": "numezis-business", "kind": "planned", "start": start,
            "end": start + timedelta(hours=hours), "note": f"record {n}", "recorded_at": recorded_at,
            "recorded_by": "api", "author": "ops"}


class Scenario:
    """The collector's side and the agents' side of the scenario, built step by step in time
    order, so that tests can also build a variant (a log rewritten, a record logged late)."""

    def __init__(self, log_key=None, *, late_record: bool = False):
        self.policy = _policy()
        self.log_key = log_key or generate_private_key()
        self.keeper = EvidenceKeeper(MemoryLog("uptime.example.com/log", self.log_key))
        self.agent_keys = {a: generate_private_key() for a in AGENTS}
        self.new_a2_key = generate_private_key()
        self.signers = {a: AgentSigner(a, k) for a, k in self.agent_keys.items()}
        for agent in AGENTS:
            self.keeper.register_key(agent, public_key_text(self.agent_keys[agent]), T0 - timedelta(days=3))
        self.records = [
            (T0 - timedelta(days=2), _maintenance_record(1, IN_MAINTENANCE[0], 1, T0 - timedelta(days=2))),
            (T0 - timedelta(days=1), _maintenance_record(2, datetime(2026, 11, 20, 1, tzinfo=UTC), 2,
                                                         T0 - timedelta(days=1))),
        ]
        if late_record:
            # recorded when it started, but stamped four days earlier: enough notice on paper
            self.records.append((datetime(2026, 11, 10, 20, tzinfo=UTC),
                                 _maintenance_record(3, datetime(2026, 11, 10, 20, tzinfo=UTC), 1,
                                                     datetime(2026, 11, 6, 20, tzinfo=UTC))))
        self.rotated = self.revoked = False

    def run(self, until: datetime = T1, *, since: datetime = T0) -> "Scenario":
        t = since
        pending = {a: [] for a in AGENTS}
        while t < until:
            while self.records and self.records[0][0] <= t:
                self.keeper.record_maintenance(self.records.pop(0)[1])
            if not self.rotated and t >= ROTATION:
                self.keeper.register_key("a2", public_key_text(self.new_a2_key), t)
                self.signers["a2"].key = self.new_a2_key
                self.rotated = True
            if not self.revoked and t >= REVOCATION:
                self.keeper.revoke_key("a2", public_key_text(self.agent_keys["a2"]), t)
                self.revoked = True
            if t == datetime(2026, 11, 9, 12, tzinfo=UTC):
                self.keeper.cancel_maintenance(2, t, "api", "moved")
            down = OUTAGE[0] <= t < OUTAGE[1] or IN_MAINTENANCE[0] <= t < IN_MAINTENANCE[1]
            for agent in AGENTS:
                pending[agent].append(result_for(agent, "app", t, not down))
                if len(pending[agent]) == 4:
                    self.ship(agent, pending[agent], t + timedelta(seconds=2))
                    pending[agent] = []
            t += timedelta(minutes=5)
        for agent, results in pending.items():
            if results:
                self.ship(agent, results, t)
        if until >= T1:
            for _, record in self.records:
                self.keeper.record_maintenance(record)
            self.records = []
        return self

    def ship(self, agent: str, results: list[dict], at: datetime) -> None:
        signed = self.signers[agent].sign(results)
        self.keeper.accept_batch(agent, results, signed, at)
        self.signers[agent].acknowledged(signed)

    def bundle(self, **kw) -> dict:
        return self.keeper.export_report(self.policy, PERIOD, now=NOW, **kw)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario().run()


@pytest.fixture(scope="module")
def pristine(scenario: Scenario) -> dict:
    return scenario.bundle()


@pytest.fixture()
def bundle(pristine: dict) -> dict:
    return copy.deepcopy(pristine)


def _verify(data: dict, **kw):
    return verify_bundle(parse_bundle(data), **kw)


def _refused(data: dict, **kw) -> str:
    with pytest.raises(NotVerified) as caught:
        _verify(data, **kw)
    return str(caught.value)


def _batch_with_failure(data: dict, agent: str = "a1") -> tuple[int, dict]:
    """A batch in the middle of `agent`'s chain holding a failed result."""
    for i, b in enumerate(data["batches"]):
        if b["agent"] == agent and any(r.get("ok") is False for r in b.get("results", [])) and i > 10:
            return i, b
    raise AssertionError("no such batch")


# -- what holds -------------------------------------------------------------------------------

def test_an_honest_bundle_verifies_and_its_figures_are_the_reports(pristine: dict, scenario: Scenario) -> None:
    verified = _verify(pristine, log_key=parse_vkey(format_vkey("uptime.example.com/log", scenario.log_key)))
    report = pristine["report"]
    assert verified.report == report
    # the hour on all agents counts; the half hour inside the announced maintenance is excluded
    assert report["outage_minutes"] == 90 and report["excluded_minutes"] == 30 and report["downtime_minutes"] == 60
    assert verified.results == 3 * 576 and verified.agents == 3 and verified.maintenance == 2
    # one signature per chain head: a1, a3, and a2 (its last batch); the rest are vouched for
    assert verified.signatures_checked == 3
    text = verified.text()
    assert text.startswith("verified: report of policy numezis-business")
    assert "downtime_minutes             60" in text and "the other batches vouched for" in text


def test_every_signature_can_be_checked_and_the_old_key_of_a_rotation_still_verifies(pristine: dict) -> None:
    verified = _verify(pristine, all_signatures=True)
    assert verified.signatures_checked == len(pristine["batches"])
    a2 = next(a for a in pristine["agents"] if a["agent"] == "a2")
    assert len(a2["keys"]) == 2 and "revoked_at" in a2["keys"][0]
    ids = {b["key_id"] for b in pristine["batches"] if b["agent"] == "a2"}
    assert len(ids) == 2  # batches signed by the old key and by the new one, all verified


def test_the_bundle_withholds_results_of_other_checks_but_still_proves_them_signed(scenario: Scenario) -> None:
    other = Scenario().run(until=T0 + timedelta(hours=6))
    # an agent probing another customer's check in the same batches
    results = [result_for("a1", "app", T0 + timedelta(hours=6), True),
               result_for("a1", "other-customer", T0 + timedelta(hours=6), False)]
    other.ship("a1", results, T0 + timedelta(hours=6, seconds=2))
    # and a batch of the other customer's results alone
    other.ship("a1", [result_for("a1", "other-customer", T0 + timedelta(hours=6, minutes=1), True)],
               T0 + timedelta(hours=6, minutes=1, seconds=2))
    other.run(until=T0 + timedelta(hours=12), since=T0 + timedelta(hours=6, minutes=5))
    data = other.bundle()
    shown = [r for b in data["batches"] for r in b.get("results", [])]
    assert not any(r.get("check") == "other-customer" for r in shown)
    assert any(set(r) == {"digest"} for r in shown)
    withheld = [b for b in data["batches"] if "results" not in b]
    assert len(withheld) == 1 and withheld[0]["count"] == 1
    _verify(data, all_signatures=True)
    withheld[0]["count"] = 2
    assert "the signature does not verify with agent a1's key" in _refused(data)


def test_a_claim_bundle_verifies(scenario: Scenario) -> None:
    data = scenario.keeper.export_claim(scenario.policy, OUTAGE[0] - timedelta(minutes=30), OUTAGE[1], now=NOW)
    verified = _verify(data)
    assert verified.kind == "claim" and data["report"]["verified_minutes"] == 60


def test_the_log_grew_from_an_earlier_checkpoint(scenario: Scenario) -> None:
    early = Scenario(scenario.log_key).run(until=datetime(2026, 11, 10, tzinfo=UTC))
    old_size = early.keeper.log.size
    old = early.keeper.log.checkpoint(datetime(2026, 11, 10, tzinfo=UTC))
    early.run(since=datetime(2026, 11, 10, tzinfo=UTC))
    data = early.bundle(old_sizes=[old_size])
    verified = _verify(data, old_checkpoint=old)
    assert verified.grew_from.size == old_size
    assert "grew from your checkpoint of tree size" in verified.text()


def test_bundles_from_the_helper_verify_for_one_result_per_batch() -> None:
    from collector.rules import Observation
    policy = _policy()
    obs = [Observation(a, "app", T0 + timedelta(minutes=5 * i), i % 50 != 7) for i in range(60) for a in AGENTS]
    data, _ = bundle_from_observations(policy, PERIOD, obs, agent_keys={a: generate_private_key() for a in AGENTS},
                                       log_key=generate_private_key(), now=NOW)
    assert len(data["batches"]) == 180
    assert _verify(data).signatures_checked == 3


# -- cheating, each caught and named -------------------------------------------------------------

def test_changing_one_results_ok_is_caught_and_the_batch_and_result_named(bundle: dict) -> None:
    i, b = _batch_with_failure(bundle)
    j = next(j for j, r in enumerate(b["results"]) if r["ok"] is False)
    b["results"][j]["ok"] = True
    message = _refused(bundle)
    assert f"batch {i} (agent a1, log entry {b['log_index']}" in message
    assert "the signature does not verify with agent a1's key" in message


def test_dropping_a_result_is_caught_and_the_batch_named(bundle: dict) -> None:
    i, b = _batch_with_failure(bundle, "a3")
    b["results"] = [r for r in b["results"] if r["ok"]]
    assert f"batch {i} (agent a3" in _refused(bundle)


def test_dropping_a_whole_batch_is_caught_as_a_gap_in_the_agents_chain(bundle: dict) -> None:
    i, _ = _batch_with_failure(bundle, "a3")
    del bundle["batches"][i]
    message = _refused(bundle)
    assert "that is not in the bundle: a batch of agent a3 is missing between it and batch" in message


def test_a_result_added_under_another_agents_key_is_caught(bundle: dict, scenario: Scenario) -> None:
    """a3's key signs a batch claiming to be a1's: no key of a1 has that id."""
    forged_results = [result_for("a1", "app", datetime(2026, 11, 10, 3, 2, tzinfo=UTC), True)]
    forger = AgentSigner("a1", scenario.agent_keys["a3"])
    signed = forger.sign(forged_results)
    last = max(b["log_index"] for b in bundle["batches"])
    bundle["batches"].append({"agent": "a1", "prev": None, "key_id": key_id("a3", scenario.agent_keys["a3"]),
                              "signature": signed.signature, "received_at": "2026-11-11T00:00:05Z",
                              "log_index": last + 1, "results": forged_results})
    message = _refused(bundle)
    assert f"batch {len(bundle['batches']) - 1} (agent a1" in message
    assert "which is no key of agent a1 in the bundle" in message
    # and claiming a1's key id does not help: the signature is a3's
    bundle["batches"][-1]["key_id"] = key_id("a1", scenario.agent_keys["a1"])
    assert "the signature does not verify with agent a1's key" in _refused(bundle)


def test_a_batch_replayed_under_another_agent_is_caught(bundle: dict) -> None:
    i, b = _batch_with_failure(bundle, "a1")
    b["agent"] = "a3"
    message = _refused(bundle)
    assert f"batch {i} (agent a3" in message and "which is no key of agent a3" in message


def test_editing_a_maintenance_records_time_is_caught_and_the_record_named(bundle: dict) -> None:
    record = bundle["maintenance"][0]["versions"][0]["record"]
    record["recorded_at"] = "2026-11-01T00:00:00Z"
    message = _refused(bundle)
    assert "the log does not hold maintenance record 1" in message and "changed after it was logged" in message


def test_a_fake_root_recomputed_over_a_changed_entry_is_caught(bundle: dict, scenario: Scenario) -> None:
    """Change a batch's receipt time by a second (no agent signed it), recompute the proof over the log as
    changed: it no longer leads to the checkpoint's root; a checkpoint of the fake root signed with
    another key (and that key named in the bundle) is caught by the log key the customer pinned."""
    from evidence.checkpoint import Checkpoint, sign_checkpoint
    b = bundle["batches"][5]
    moved = datetime.fromisoformat(b["received_at"].replace("Z", "+00:00")) + timedelta(seconds=1)
    b["received_at"] = canonical.canonical_time(moved)
    fake = list(scenario.keeper.log.leaves)
    statement = canonical.statement_for_results(b["agent"], b["prev"], b["results"])
    entry = canonical.batch_entry(b["agent"], canonical.batch_hash(statement), b["key_id"], b["signature"],
                                  b["received_at"])
    fake[b["log_index"]] = merkle.leaf_hash(entry)
    wanted = [x["log_index"] for x in bundle["batches"]]
    wanted += [v["log_index"] for m in bundle["maintenance"] for v in m["versions"]]
    wanted += [k[f] for a in bundle["agents"] for k in a["keys"] for f in ("log_index", "revoked_log_index") if f in k]
    bundle["proof"]["nodes"] = {f"{s}:{e}": base64.b64encode(h).decode()
                                for (s, e), h in merkle.proof_nodes(wanted, len(fake), fake).items()}
    assert "not to the checkpoint's root" in _refused(bundle)
    impostor = generate_private_key()
    bundle["log"]["checkpoint"] = sign_checkpoint(Checkpoint("uptime.example.com/log", len(fake), merkle.root(fake),
                                                             NOW), impostor)
    bundle["log"]["key"] = format_vkey("uptime.example.com/log", impostor)
    _verify(bundle)  # self-consistent, with the key it names itself
    pinned = parse_vkey(format_vkey("uptime.example.com/log", scenario.log_key))
    message = _refused(bundle, log_key=pinned)
    assert message.startswith("checkpoint: the note is not signed by the expected key uptime.example.com/log+")


def test_a_log_rewritten_between_two_checkpoints_is_caught(scenario: Scenario) -> None:
    """The customer kept a checkpoint; the operator then rewrote an earlier entry (maintenance
    record 1, given a longer window) and re-signed the grown log with its own key: the
    consistency proof from the kept checkpoint cannot hold."""
    early = Scenario(scenario.log_key).run(until=datetime(2026, 11, 10, tzinfo=UTC))
    old_size = early.keeper.log.size
    old = early.keeper.log.checkpoint(datetime(2026, 11, 10, tzinfo=UTC))
    early.run(since=datetime(2026, 11, 10, tzinfo=UTC))
    keeper = early.keeper
    index, record = keeper.maintenance[1][0]
    rewritten = dict(record, end="2026-11-10T15:00:00Z")  # a longer window: more excluded
    keeper.log.entries[index] = canonical.maintenance_entry(rewritten)
    keeper.log.leaves[index] = merkle.leaf_hash(keeper.log.entries[index])
    keeper.log.cache.clear()
    keeper.maintenance[1][0] = (index, canonical.maintenance_record(rewritten))
    data = early.bundle(old_sizes=[old_size])
    _verify(data)  # on its own, the rewritten log is consistent with itself
    message = _refused(data, old_checkpoint=old)
    assert message.startswith(f"the log was rewritten: the checkpoint of tree size {keeper.log.size} does not extend "
                              f"your checkpoint of tree size {old_size}")


def test_a_maintenance_record_logged_late_with_an_earlier_time_is_caught() -> None:
    late = Scenario(late_record=True).run()
    message = _refused(late.bundle())
    assert message.startswith("maintenance record 3, recorded at 2026-11-06T20:00:00Z carries time")
    assert "its time was moved back" in message


def test_a_changed_figure_is_named(bundle: dict) -> None:
    bundle["report"]["downtime_minutes"] = 30
    assert _refused(bundle) == "figure 'downtime_minutes': the report says 30, the evidence gives 60"


def test_a_changed_rule_is_caught_by_its_hash(bundle: dict) -> None:
    bundle["policy"]["rule"]["target_percent"] = 99.0
    assert "policy.rule hashes to" in _refused(bundle)


def test_an_agent_key_other_than_the_one_the_customer_knows_is_caught(bundle: dict) -> None:
    known = public_key_text(generate_private_key())
    message = _refused(bundle, agent_keys={"a1": {known}})
    assert message.startswith("agent a1's key ed25519:") and "is not one you gave with --agent-key for a1" in message


def test_a_batch_signed_with_a_revoked_key_after_its_revocation_is_caught(scenario: Scenario) -> None:
    after = Scenario().run(until=datetime(2026, 11, 10, 8, tzinfo=UTC))
    after.signers["a2"].key = after.agent_keys["a2"]  # the old, revoked key
    after.run(since=datetime(2026, 11, 10, 8, tzinfo=UTC))
    message = _refused(after.bundle())
    assert "(agent a2" in message and "was revoked before it" in message


def test_unsigned_batches_are_refused_unless_allowed_and_then_counted() -> None:
    mixed = Scenario().run(until=datetime(2026, 11, 10, tzinfo=UTC))
    results = [result_for("a1", "app", datetime(2026, 11, 10, tzinfo=UTC), True)]
    mixed.keeper.accept_batch("a1", results, None, datetime(2026, 11, 10, 0, 0, 2, tzinfo=UTC))
    data = mixed.bundle()
    assert "is unsigned (give --allow-unsigned" in _refused(data)
    verified = _verify(data, allow_unsigned=True)
    assert verified.unsigned_results == 1 and "unsigned: 1 results" in verified.text()


# -- the command line ---------------------------------------------------------------------------

def test_the_command_exits_0_1_and_2(pristine: dict, tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.json"
    save_bundle(pristine, good)
    assert main([str(good)]) == 0
    assert capsys.readouterr().out.startswith("verified: report of policy numezis-business")
    bad = copy.deepcopy(pristine)
    bad["report"]["availability_percent"] = 100
    save_bundle(bad, tmp_path / "bad.json")
    assert main([str(tmp_path / "bad.json")]) == 1
    assert capsys.readouterr().out.startswith("NOT VERIFIED: figure 'availability_percent': the report says 100")
    (tmp_path / "junk.json").write_text("{not json")
    assert main([str(tmp_path / "junk.json")]) == 2
    assert "not JSON (line 1, column 2)" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    assert main([str(tmp_path / "other.json")]) == 2
    assert "not an evidence bundle" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 2
    assert main([str(good), "--log-key", "nonsense"]) == 2
    assert "log key 'nonsense': expected" in capsys.readouterr().err
    malformed = copy.deepcopy(pristine)
    malformed["batches"][3]["log_index"] = "three"
    save_bundle(malformed, tmp_path / "malformed.json")
    assert main([str(tmp_path / "malformed.json")]) == 1
    assert "batches[3].log_index: expected a number, got a string" in capsys.readouterr().out


def test_the_installed_console_script_verifies_a_bundle(pristine: dict, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    save_bundle(pristine, path)
    done = subprocess.run([str(Path(sys.executable).parent / "uptime-verify"), str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified: report of policy numezis-business" in done.stdout


@pytest.mark.parametrize("preset", ["haivision-streaming", "haivision-vcms-read", "nexcess", "nexgen-cpu", "nexon-vision",
                                    "numezis-business"])
def test_every_presets_rule_text_reads_back_with_the_same_hash(preset: str) -> None:
    """The bundle carries the rule as JSON; the verifier must read back the very policy the
    collector hashed, or no bundle of that policy could verify."""
    from collector.rules.policy import Policy
    policy = load_policy(preset, target_percent=99.9, commenced="2026-10-15T09:00:00+02:00")
    again = Policy.model_validate(json.loads(json.dumps(policy.model_dump(mode="json"))))
    assert again == policy and again.content_hash() == policy.content_hash()


def test_a_bundle_saved_and_loaded_verifies_the_same(pristine: dict, tmp_path: Path) -> None:
    from evidence.bundle import bundle_json, load_bundle
    save_bundle(pristine, tmp_path / "b.json")
    loaded = load_bundle(tmp_path / "b.json")
    assert bundle_json(loaded) == pristine
    assert verify_bundle(loaded).report == pristine["report"]


def test_random_damage_to_a_bundle_is_refused_with_a_message_never_a_traceback() -> None:
    """Any field of a small bundle replaced by another JSON value, a key dropped or added: the
    verifier says NOT VERIFIED (or, rarely, still verified when the value was unused), nothing else."""
    import random
    from collector.rules import Observation
    from evidence.bundle import BundleError
    rng = random.Random(1)
    obs = [Observation(a, "app", T0 + timedelta(minutes=5 * i), i != 3) for i in range(6) for a in AGENTS[:2]]
    record = _maintenance_record(1, T0 + timedelta(minutes=10), 0.5, T0 - timedelta(days=4))
    data, _ = bundle_from_observations(_policy(), PERIOD, obs, log_key=generate_private_key(), now=NOW,
                                       agent_keys={a: generate_private_key() for a in AGENTS[:2]},
                                       maintenance=[record], results_per_batch=2)
    values = [None, True, 0, -1, 2 ** 70, 1.5, "", "x", "2026-11-09T00:00:00Z", [], {}, [1], {"a": 1}, "ab" * 32]

    def paths(node, path=()):
        yield path
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, path + (i,))

    all_paths = [p for p in paths(data) if p]
    outcomes = {"refused": 0, "verified": 0}
    for _ in range(1000):
        damaged = copy.deepcopy(data)
        path = rng.choice(all_paths)
        parent = damaged
        for step in path[:-1]:
            parent = parent[step]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.25 and isinstance(parent, dict):
            parent["unexpected"] = rng.choice(values)
        else:
            parent[path[-1]] = rng.choice(values)
        try:
            verify_bundle(parse_bundle(damaged))
            outcomes["verified"] += 1
        except (NotVerified, BundleError) as err:
            assert str(err), path
            outcomes["refused"] += 1
    assert outcomes["refused"] > 900


def test_a_second_vote_of_an_agent_in_one_slot_is_caught() -> None:
    """The collector keeps one vote per agent, check and slot (the first): a bundle with two,
    both signed, cannot stand for what the collector stored."""
    twice = Scenario().run(until=datetime(2026, 11, 9, 6, tzinfo=UTC))
    again = dict(result_for("a1", "app", datetime(2026, 11, 9, 5, 55, tzinfo=UTC), False), id="f" * 32)
    twice.ship("a1", [again], datetime(2026, 11, 9, 6, 0, 5, tzinfo=UTC))
    message = _refused(twice.bundle())
    assert "agent a1 already voted in check app slot 2026-11-09T05:55:00Z" in message


def test_degraded_results_are_signed_and_counted_as_the_collector_counts_them() -> None:
    from collector.rules import Observation
    if "degraded" not in Observation.__dataclass_fields__:
        pytest.skip("this rules core has no degraded rounds")
    slow = Scenario().run(until=datetime(2026, 11, 9, 6, tzinfo=UTC))
    for agent in AGENTS:
        slow.ship(agent, [result_for(agent, "app", datetime(2026, 11, 9, 6, tzinfo=UTC), True, degraded=True)],
                  datetime(2026, 11, 9, 6, 0, 3, tzinfo=UTC))
    data = slow.bundle()
    assert sum(r.get("degraded") is True for b in data["batches"] for r in b.get("results", [])) == 3
    _verify(data)
    flipped = copy.deepcopy(data)
    for b in flipped["batches"]:
        for r in b.get("results", []):
            r.pop("degraded", None)
    assert "the signature does not verify" in _refused(flipped)
