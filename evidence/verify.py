"""`uptime-verify FILE`: check an evidence bundle offline and recompute its report.

    uptime-verify [--log-key KEY] [--checkpoint OLD] [--agent-key AGENT=ed25519:...]
                  [--all-signatures] [--allow-unsigned] FILE

Exit 0: verified (the figures are printed). 1: not verified; the first thing that does not hold
is named (which batch, which result, which record, which figure). 2: bad usage, or FILE (or OLD)
cannot be read or is not a bundle.

The checks, in order (docs/evidence.md, "Verifying a bundle"):
 1. The checkpoint is a signed note by the log's key (pinned with --log-key, else the bundle's),
    and with --checkpoint OLD the log grew from OLD (RFC 9162 consistency proof).
 2. The policy's rule hashes to the hash the bundle and the report state.
 3. Every batch: its results' digests, its statement, its agent's key (registered in the log
    before the batch, not revoked before it); the agents' chains: every statement is vouched for
    by a later one that names it (`prev`) or its own signature verifies (every signature with
    --all-signatures), and no statement an agent made between two in the bundle is missing.
 4. Every log entry the bundle relies on (keys, batches, maintenance records, recurring series
    and their occurrences' cancellations) is in the log at its index: the proof leads to the
    checkpoint's root. Entries' times follow the log's order.
 5. The report is recomputed from the results, maintenance and the series' occurrences (expanded
    by collector.rules.recurrence) with the rules core (collector.rules) and compared figure by
    figure.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from . import canonical, keys as _keys, merkle, series as _series
from .bundle import Batch, Bundle, BundleError, UnreadableBundle, load_bundle
from .checkpoint import Checkpoint, NoteError, NoteKey, parse_vkey, verify_checkpoint

__all__ = ["NotVerified", "Verified", "verify_bundle", "main", "TIME_ORDER_TOLERANCE"]

# Several collectors append to one log, each stamping entries with its own clock: an entry may
# carry a time this much earlier than one logged before it. More than that, and a time was moved.
TIME_ORDER_TOLERANCE = timedelta(minutes=5)

REPORT_FIGURES = ("availability_percent", "availability_worst_percent", "target_percent", "verdict",
                  "downtime_minutes", "outage_minutes", "excluded_minutes", "unknown_minutes", "undecided_minutes",
                  "remaining_budget_minutes", "data_coverage_percent")
CLAIM_FIGURES = ("claimed_minutes", "verified_minutes", "excluded_minutes", "qualifying_minutes", "verified",
                 "credit_percent")


class NotVerified(Exception):
    """The first thing in a bundle that does not hold."""


@dataclass
class Verified:
    kind: str
    policy: str
    policy_hash: str
    subject: str                      # "period 2026-11" or "claim ... to ..."
    checkpoint: Checkpoint
    log_key: str
    log_key_pinned: bool
    results: int
    batches: int
    agents: int
    signatures_checked: int
    unsigned_results: int
    maintenance: int
    report: dict
    grew_from: Checkpoint | None = None
    stated: list[str] = field(default_factory=list)
    unstated: list[str] = field(default_factory=list)
    series: int = 0
    cancelled_occurrences: int = 0

    def figures(self) -> list[tuple[str, Any]]:
        names = REPORT_FIGURES if self.kind == "report" else CLAIM_FIGURES
        out = [(n, self.report[n]) for n in names if n in self.report]
        credit = self.report.get("credit")
        if isinstance(credit, dict):
            for key in ("percent", "percent_worst", "days", "amount"):
                if key in credit:
                    out.append((f"credit.{key}", credit[key]))
        return out

    def text(self) -> str:
        cp = self.checkpoint
        lines = [f"verified: {self.kind} of policy {self.policy} (rule {self.policy_hash}), {self.subject}",
                 f"  log {cp.origin}: tree size {cp.size}, root {base64.b64encode(cp.root).decode()}"
                 + (f", signed {canonical.canonical_time(cp.time)}" if cp.time else "")
                 + f" by {self.log_key}" + ("" if self.log_key_pinned else
                                             " (the key the bundle names; pin it with --log-key)")]
        if self.grew_from is not None:
            lines.append(f"  the log grew from your checkpoint of tree size {self.grew_from.size} without rewriting it")
        lines.append(f"  evidence: {self.results} results in {self.batches} batches from {self.agents} agents "
                     f"({self.signatures_checked} signatures checked, the other batches vouched for by their "
                     f"agents' chains), {self.maintenance} maintenance records"
                     + (f", {self.series} recurring maintenance series ({self.cancelled_occurrences} occurrences "
                        "cancelled)" if self.series else "") + ", all in the log")
        if self.unsigned_results:
            lines.append(f"  unsigned: {self.unsigned_results} results came in unsigned batches (--allow-unsigned)")
        lines.append("  figures, recomputed from the evidence, each equal to the bundle's report:")
        for name, value in self.figures():
            lines.append(f"    {name:<28} {_show(value)}")
        for note in self.stated:
            lines.append(f"  taken as stated: {note}")
        if self.unstated:
            lines.append("  not in the report (made by an older collector), given by the evidence: "
                         + ", ".join(self.unstated[:8]) + (" …" if len(self.unstated) > 8 else ""))
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return str(value).lower()
    return str(value)


def _batch_label(b: Batch) -> str:
    return f"batch {b.position} (agent {b.agent}, log entry {b.log_index}, received {b.received_at})"


def _withheld_digest(b: Batch, r: dict) -> bytes:
    d = r["digest"]
    if type(d) is str and len(d) == 64:
        try:
            return bytes.fromhex(d)
        except ValueError:
            pass
    raise NotVerified(f"{_batch_label(b)}, results[{b.results.index(r)}].digest: expected 64 hex digits")


def _named(label: Any) -> str:
    return _batch_label(label) if isinstance(label, Batch) else str(label)


def _result_label(b: Batch) -> str:
    """A batch with the ids of the results it shows: any of them may be the one changed."""
    ids = [r.get("id") for r in b.results or () if "id" in r]
    if len(ids) == 1:
        return f"{_batch_label(b)}, result {ids[0]}"
    if ids:
        shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        return f"{_batch_label(b)}, holding results {shown}"
    return _batch_label(b)


def verify_bundle(bundle: Bundle, **options: Any) -> Verified:
    """Every check of the module's docstring; NotVerified naming the first that fails (options:
    those of _verify). The cyclic garbage collector is paused meanwhile: its full passes over the
    hundreds of thousands of small objects a month's bundle makes would cost as much as the work."""
    from collector.rules.model import paused_gc
    with paused_gc():
        return _verify(bundle, **options)


def _verify(bundle: Bundle, *, log_key: NoteKey | None = None, old_checkpoint: str | None = None,
            agent_keys: dict[str, set[str]] | None = None, all_signatures: bool = False,
            allow_unsigned: bool = False, timings: dict[str, float] | None = None) -> Verified:
    """Every check of the module's docstring; NotVerified naming the first that fails.
    `timings`, when given, gets the seconds each step took (for the benchmark)."""
    import time
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now

    from collector.rules.model import Announcement, Observation
    from collector.rules.offline import evaluate_offline, verify_claim_offline
    from collector.rules.policy import Policy, PolicyError
    from pydantic import ValidationError

    # 1. the checkpoint
    pinned = log_key is not None
    if log_key is None:
        try:
            log_key = parse_vkey(bundle.log.key)
        except NoteError as err:
            raise NotVerified(f"log.key: {err}") from None
    try:
        cp = verify_checkpoint(bundle.log.checkpoint, log_key)
    except NoteError as err:
        raise NotVerified(f"checkpoint: {err}") from None
    if cp.origin != bundle.log.origin:
        raise NotVerified(f"checkpoint: origin {cp.origin!r} is not the bundle's log {bundle.log.origin!r}")
    if bundle.tree_size != cp.size:
        raise NotVerified(f"proof.tree_size: {bundle.tree_size}, but the checkpoint is of tree size {cp.size}")
    grew_from = None
    if old_checkpoint is not None:
        try:
            old = verify_checkpoint(old_checkpoint, log_key)
        except NoteError as err:
            raise NotVerified(f"your checkpoint (--checkpoint): {err}") from None
        if old.size > cp.size:
            raise NotVerified(f"the bundle's checkpoint (tree size {cp.size}) is older than yours (tree size "
                              f"{old.size}): the log cannot have shrunk")
        proof = [] if old.size == cp.size else bundle.log.consistency.get(old.size)
        if proof is None:
            raise NotVerified(f"the bundle holds no consistency proof from your checkpoint's tree size {old.size} to "
                              f"{cp.size}; export it again with that size (sizes it holds: "
                              f"{', '.join(map(str, sorted(bundle.log.consistency))) or 'none'})")
        try:
            merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)
        except merkle.ProofError as err:
            raise NotVerified(f"the log was rewritten: the checkpoint of tree size {cp.size} does not extend your "
                              f"checkpoint of tree size {old.size} ({err})") from None
        grew_from = old

    lap("checkpoint and consistency")
    # 2. the policy
    try:
        policy = Policy.model_validate(bundle.policy_rule)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise NotVerified(f"policy.rule.{where}: {first['msg']}") from None
    except PolicyError as err:
        raise NotVerified(f"policy.rule: {err}") from None
    rule_hash = policy.content_hash()
    if rule_hash != bundle.policy_hash:
        raise NotVerified(f"policy.rule hashes to {rule_hash}, but the bundle says {bundle.policy_hash}")
    if policy.name != bundle.policy_name:
        raise NotVerified(f"policy.rule is policy {policy.name!r}, but the bundle says {bundle.policy_name!r}")
    if bundle.report.get("policy_hash") != rule_hash:
        raise NotVerified(f"report.policy_hash is {bundle.report.get('policy_hash')!r}, not the rule's hash {rule_hash}")

    leaves: dict[int, bytes] = {}
    owners: dict[int, str] = {}
    timed: list[tuple[int, datetime, str]] = []

    # labels are made only for a message: a batch stands for its own (a month holds 260,000)
    placed: list[tuple[int, bytes, Any]] = []

    def place(index: int, entry: bytes, label: Any) -> None:
        placed.append((index, entry, label))

    def when(text: str, label: Any) -> datetime:
        try:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                raise ValueError(text)
            return moment if not moment.utcoffset() else moment.astimezone(timezone.utc)
        except (TypeError, ValueError):
            raise NotVerified(f"{_named(label)}: {text!r} is not an RFC 3339 timestamp with an offset") from None

    lap("policy")
    # 3a. agents' keys
    agent_key_map: dict[str, dict[str, tuple[Any, int, int | None]]] = {}
    for k in bundle.agents:
        label = f"agent {k.agent}'s key {k.key}"
        try:
            public = _keys.parse_public_key(k.key, f"agent {k.agent}'s key")
            place(k.log_index, canonical.agent_key_entry(k.agent, k.key, k.registered_at), label)
            if k.revoked_log_index is not None:
                place(k.revoked_log_index, canonical.agent_key_revocation_entry(k.agent, k.key, k.revoked_at),
                      f"the revocation of {label}")
        except (_keys.BadKey, canonical.CanonicalError) as err:
            raise NotVerified(str(err)) from None
        timed.append((k.log_index, when(k.registered_at, label), label))
        if k.revoked_log_index is not None:
            timed.append((k.revoked_log_index, when(k.revoked_at, f"the revocation of {label}"), f"the revocation of {label}"))
        if agent_keys and k.agent in agent_keys and k.key not in agent_keys[k.agent]:
            raise NotVerified(f"{label} is not one you gave with --agent-key for {k.agent}")
        agent_key_map.setdefault(k.agent, {})[_keys.key_id(k.agent, public)] = (public, k.log_index, k.revoked_log_index)

    # 3b. batches: digests, statements, log entries, observations
    components = set(policy.components)
    hashes: list[str] = []
    statements: list[bytes] = []
    observations: list[Observation] = []
    seen_results: dict[tuple[str, str], tuple[bytes, int]] = {}
    votes: dict[tuple[str, str, datetime], tuple[str, int]] = {}
    slot_cache: dict[str, datetime] = {}
    duplicate: str | None = None
    with_degraded = "degraded" in getattr(Observation, "__dataclass_fields__", {})
    result_count = unsigned_results = 0
    last_index = -1
    sha256 = hashlib.sha256
    statement_bytes, entry_bytes = canonical._statement, canonical._batch_entry
    canonical_result, placed_add, timed_add = canonical.canonical_result, placed.append, timed.append
    statements_add, hashes_add, observe = statements.append, hashes.append, observations.append
    fromiso = datetime.fromisoformat
    for b in bundle.batches:
        agent, log_index = b.agent, b.log_index
        if log_index <= last_index:
            raise NotVerified(f"{_batch_label(b)}: batches are not listed in log order")
        last_index = log_index
        results = b.results
        if results is not None:
            digests = []
            keep = digests.append
            for r in results:
                if type(r) is not dict:
                    raise NotVerified(f"{_batch_label(b)}, results[{results.index(r)}]: expected an object")
                if len(r) == 1 and "digest" in r:
                    keep(_withheld_digest(b, r))
                    continue
                try:
                    digest = sha256(canonical_result(r)).digest()
                except canonical.CanonicalError as err:
                    raise NotVerified(f"{_batch_label(b)}, results[{results.index(r)}]: {err}") from None
                keep(digest)
                check = r["check"]
                if type(check) is not str:
                    raise NotVerified(f"{_batch_label(b)}, results[{results.index(r)}].check: expected a string")
                if check not in components:
                    continue
                rid, ok, slot = r["id"], r["ok"], r["slot"]
                if type(rid) is not str or type(slot) is not str or (ok is not True and ok is not False):
                    raise NotVerified(f"{_batch_label(b)}, results[{results.index(r)}]: id and slot are strings "
                                      "and ok is true or false")
                # one result per id and one vote per agent, check and slot, as the collector keeps
                # them; a fault here is told after the signatures (a forged batch is named as such)
                key = (agent, rid)
                first = seen_results.get(key)
                if first is not None:
                    if first[0] != digest and duplicate is None:
                        duplicate = (f"{_batch_label(b)}, result {rid}: agent {agent}'s result {rid} appears "
                                     f"again with other contents than in batch {first[1]}")
                    continue
                seen_results[key] = (digest, b.position)
                ts = slot_cache.get(slot)
                if ts is None:
                    try:
                        ts = fromiso(slot)
                        if ts.tzinfo is None:
                            raise ValueError(slot)
                    except ValueError:
                        raise NotVerified(f"{_batch_label(b)}, result {rid}: slot {slot!r} is not an RFC 3339 "
                                          "timestamp with an offset") from None
                    if ts.utcoffset():
                        ts = ts.astimezone(timezone.utc)
                    slot_cache[slot] = ts
                key = (agent, check, ts)
                vote = votes.get(key)
                if vote is not None:
                    if duplicate is None:
                        duplicate = (f"{_batch_label(b)}, result {rid}: agent {agent} already voted in check "
                                     f"{check} slot {slot} (result {vote[0]} in batch {vote[1]}); the collector "
                                     "keeps one vote per agent, check and slot")
                    continue
                votes[key] = (rid, b.position)
                if with_degraded:
                    observe(Observation(agent, check, ts, ok, ok and r.get("degraded") is True))
                else:
                    observe(Observation(agent, check, ts, ok))
                result_count += 1
                if b.signature is None:
                    unsigned_results += 1
            count, results_hash = len(digests), sha256(b"".join(digests)).hexdigest()
        else:
            count, results_hash = b.count, b.results_sha256
        try:
            # the bundle's parser checked prev, key_id and a withheld batch's hash: the fast encoders
            statement = statement_bytes(agent, b.prev, count, results_hash)
            bhash = sha256(statement).hexdigest()
            placed_add((log_index, entry_bytes(agent, bhash, b.key_id, b.signature, b.received_at), b))
        except canonical.CanonicalError as err:
            raise NotVerified(f"{_batch_label(b)}: {err}") from None
        statements_add(statement)
        hashes_add(bhash)
        timed_add((log_index, when(b.received_at, b), b))

    lap("batches: digests, statements, entries")
    # 3c. keys and chains: newest first, a statement named as `prev` by a vouched-for one is
    # vouched for itself; any other needs its own signature
    failures: list[tuple[int, str]] = []
    vouched: dict[str, set[str]] = {}
    checked = 0
    for b, statement, bhash in zip(reversed(bundle.batches), reversed(statements), reversed(hashes)):
        if b.signature is None:
            if not allow_unsigned:
                failures.append((b.position, f"{_result_label(b)} is unsigned (give --allow-unsigned to accept "
                                             "unsigned batches, counted apart)"))
            continue
        key = agent_key_map.get(b.agent, {}).get(b.key_id)
        if key is None:
            failures.append((b.position, f"{_result_label(b)} is signed with key id {b.key_id}, which is no key "
                                         f"of agent {b.agent} in the bundle"))
            continue
        public, registered, revoked = key
        if registered > b.log_index:
            failures.append((b.position, f"{_result_label(b)} is signed with a key of agent {b.agent} that the "
                                         f"log registered only later, at log entry {registered}"))
            continue
        if revoked is not None and revoked < b.log_index:
            failures.append((b.position, f"{_result_label(b)} is signed with a key of agent {b.agent} that was "
                                         f"revoked before it, at log entry {revoked}"))
            continue
        mine = vouched.setdefault(b.agent, set())
        if bhash not in mine or all_signatures:
            checked += 1
            try:
                good = canonical.verify_batch_signature(public, statement, b.signature)
            except canonical.CanonicalError as err:
                failures.append((b.position, f"{_result_label(b)}: {err}"))
                continue
            if not good:
                failures.append((b.position, f"{_result_label(b)}: the signature does not verify with agent "
                                             f"{b.agent}'s key {b.key_id}: its results, agent or predecessor were "
                                             "changed, or another key signed it"))
                continue
        if b.prev is not None:
            mine.add(b.prev)
    if failures:
        raise NotVerified(min(failures)[1])
    known: dict[str, dict[str, int]] = {}
    for b, bhash in zip(bundle.batches, hashes):
        mine = known.setdefault(b.agent, {})
        if b.prev is not None and mine and b.prev not in mine:
            before = max(mine.values())
            raise NotVerified(f"{_batch_label(b)} names as its predecessor a statement ({b.prev[:16]}…) that is not "
                              f"in the bundle: a batch of agent {b.agent} is missing between it and batch {before}, "
                              f"or batch {before} was changed")
        mine[bhash] = b.position

    lap("keys and chains (signatures)")
    if duplicate is not None:
        raise NotVerified(duplicate)

    # 3d. maintenance records, every version
    announcements = []
    for n, versions in enumerate(bundle.maintenance):
        records = []
        for v in sorted(versions, key=lambda v: v.log_index):
            try:
                record = canonical.maintenance_record(v.record)
                place(v.log_index, canonical.maintenance_entry(record),
                      f"maintenance record {record['id']} (log entry {v.log_index})")
            except canonical.CanonicalError as err:
                raise NotVerified(f"maintenance[{n}] (log entry {v.log_index}): {err}") from None
            records.append((v.log_index, record))
        first_index, first = records[0]
        label = f"maintenance record {first['id']}"
        timed.append((first_index, when(first["recorded_at"], label), f"{label}, recorded at {first['recorded_at']}"))
        for index, record in records[1:]:
            changed = [f for f in canonical.MAINTENANCE_FIELDS if record[f] != first[f]
                       and f not in ("cancelled_at", "cancelled_by", "cancel_reason")]
            if changed:
                raise NotVerified(f"{label}: its version at log entry {index} changes {', '.join(changed)}; a record "
                                  "is only ever cancelled, never edited")
        last = records[-1][1]
        if last["cancelled_at"] is not None:
            cancel_index = next(i for i, r in records if r["cancelled_at"] is not None)
            timed.append((cancel_index, when(last["cancelled_at"], label), f"{label}, cancelled at {last['cancelled_at']}"))
        if last["policy"] != policy.name:
            raise NotVerified(f"{label} belongs to policy {last['policy']!r}, not {policy.name!r}")

        def ts(value, what, label=label):
            return None if value is None else when(value, f"{label}: {what}")
        try:
            announcements.append(Announcement(
                kind=last["kind"], announced=ts(last["stated_announced"], "stated_announced"),
                start=ts(last["start"], "start"), end=ts(last["end"], "end"), note=last["note"],
                recorded_at=ts(last["recorded_at"], "recorded_at"), recorded_by=last["recorded_by"],
                author=last["author"], cancelled_at=ts(last["cancelled_at"], "cancelled_at"),
                cancel_reason=last["cancel_reason"] or "", id=last["id"]))
        except ValueError as err:
            raise NotVerified(f"{label}: {err}") from None
    announcements.sort(key=lambda a: (a.start, a.id))

    # 3e. recurring maintenance series: every version, every occurrence's cancellation
    logged_series = _series_of_bundle(bundle, policy.name, place, timed, when)

    lap("maintenance records")
    # 4. the log: every entry at its index, leading to the checkpoint's root
    for index, entry, label in placed:
        if index >= cp.size:
            raise NotVerified(f"{_named(label)}: log entry {index} is beyond the checkpoint's tree size {cp.size}")
        if index in leaves:
            raise NotVerified(f"{_named(label)} and {_named(owners[index])} both claim log entry {index}")
        leaves[index] = canonical.entry_leaf_hash(entry)
        owners[index] = label
    if not leaves:
        raise NotVerified("the bundle holds no log entries")
    try:
        try:
            head = merkle.root_from_nodes(cp.size, leaves, bundle.nodes, compare=False)
        except merkle.ProofError:
            head = None
        if head != cp.root:  # again, comparing every node the proof gives, to name what differs
            head = merkle.root_from_nodes(cp.size, leaves, bundle.nodes)
    except merkle.NodeMismatch as err:
        named = "; ".join(_named(owners[i]) for i in err.indices[:3]) + (" …" if len(err.indices) > 3 else "")
        what = "this entry was changed after it was logged" if len(err.indices) == 1 else \
            "one of these entries was changed after it was logged"
        raise NotVerified(f"the log does not hold {named} as the bundle gives it: {what} (or the proof's "
                          f"hash of log entries [{err.start}, {err.end}) was)") from None
    except merkle.ProofError as err:
        raise NotVerified(f"proof: {err}") from None
    if head != cp.root:
        raise NotVerified(f"the bundle's log entries and proof lead to root {base64.b64encode(head).decode()}, not to "
                          f"the checkpoint's root {base64.b64encode(cp.root).decode()}: an entry or a proof hash was "
                          "changed")
    timed.sort(key=lambda t: t[0])
    latest: tuple[datetime, str] | None = None
    for index, moment, label in timed:
        if latest is not None and moment < latest[0] - TIME_ORDER_TOLERANCE:
            raise NotVerified(f"{_named(label)} carries time {canonical.canonical_time(moment)}, but the log holds it "
                              f"(at entry {index}) after {_named(latest[1])} at {canonical.canonical_time(latest[0])}: "
                              "its time was moved back")
        if latest is None or moment > latest[0]:
            latest = (moment, label)

    # the series' rules, once their entries are known to be the logged ones (a changed entry is
    # named as such, not by what the change broke); expanded for the period by the rules core
    series, cancelled_count = _series_rules(logged_series, when)
    announcements += series

    lap("log: proof to the checkpoint, time order")
    # 5. the report, recomputed
    inputs = bundle.inputs
    as_of = None if inputs.get("as_of") is None else when(inputs["as_of"], "inputs.as_of")
    expected = inputs.get("expected_by_component")
    stated = []
    if expected is not None:
        stated.append("the agents expected per component: " + "; ".join(
            f"{c}: {', '.join(a)}" for c, a in sorted(expected.items())))
    try:
        if bundle.kind == "report":
            history = [(h["period"], h["availability_percent"]) for h in inputs.get("history") or []]
            if history:
                stated.append("earlier months' availability (for the credit rule): " + ", ".join(
                    f"{p} {a if a is not None else 'unknown'}" for p, a in history))
            recomputed = evaluate_offline(policy, observations, bundle.period, announcements, now=as_of,
                                          history=history or None, fee=inputs.get("fee"),
                                          expected_by_component=expected)
            subject = f"period {bundle.period}"
        else:
            start = when(bundle.claim_start, "claim.start")
            end = when(bundle.claim_end, "claim.end")
            recomputed = verify_claim_offline(policy, observations, start, end, announcements, now=as_of,
                                              expected_by_component=expected)
            subject = f"claimed outage {bundle.claim_start} to {bundle.claim_end}"
    except (PolicyError, ValueError, TypeError, KeyError) as err:
        raise NotVerified(f"recomputing the {bundle.kind} from the evidence: {err}") from None
    import json
    recomputed = json.loads(json.dumps(recomputed, default=str))
    lap("report recomputed")
    unstated: list[str] = []
    difference = _first_difference(bundle.report, recomputed, "", unstated)
    if difference is not None:
        raise NotVerified(f"figure {difference}")
    lap("figures compared")

    return Verified(
        kind=bundle.kind, policy=policy.name, policy_hash=rule_hash, subject=subject, checkpoint=cp,
        log_key=f"{log_key.name}+{log_key.key_id}", log_key_pinned=pinned, results=result_count,
        batches=len(bundle.batches), agents=len({b.agent for b in bundle.batches}), signatures_checked=checked,
        unsigned_results=unsigned_results, maintenance=len(bundle.maintenance), report=recomputed,
        grew_from=grew_from, stated=stated, unstated=unstated, series=len(series),
        cancelled_occurrences=cancelled_count)


def _series_of_bundle(bundle: Bundle, policy_name: str, place, timed: list, when) -> list[tuple[str, dict, list]]:
    """(label, latest record, cancellations) of each of the bundle's `series`, checked as one-off
    records are: each version and cancellation canonical and placed at its log index (the proof
    is checked with every other entry), later versions changing only the cancellation fields, the
    policy's own, times in log order (_series_rules then reads the rule)."""
    out = []
    seen: dict[int, int] = {}
    for item in bundle.series:
        n = item.position
        records = []
        for v in sorted(item.versions, key=lambda v: v.log_index):
            try:
                record = _series.series_record(v.record)
                place(v.log_index, _series.series_entry(record),
                      f"maintenance series {record['id']} (log entry {v.log_index})")
            except canonical.CanonicalError as err:
                raise NotVerified(f"series[{n}] (log entry {v.log_index}): {err}") from None
            records.append((v.log_index, record))
        first_index, first = records[0]
        label = f"maintenance series {first['id']}"
        if first["id"] in seen:
            raise NotVerified(f"{label} is given twice (series[{seen[first['id']]}] and series[{n}])")
        seen[first["id"]] = n
        timed.append((first_index, when(first["recorded_at"], label), f"{label}, recorded at {first['recorded_at']}"))
        for index, record in records[1:]:
            changed = [f for f in _series.SERIES_FIELDS if record[f] != first[f] and f not in _series.SERIES_CANCEL_FIELDS]
            if changed:
                raise NotVerified(f"{label}: its version at log entry {index} changes {', '.join(changed)}; a series "
                                  "is only ever cancelled, never edited")
        last = records[-1][1]
        if last["cancelled_at"] is not None:
            cancel_index = next(i for i, r in records if r["cancelled_at"] is not None)
            timed.append((cancel_index, when(last["cancelled_at"], label), f"{label}, cancelled at {last['cancelled_at']}"))
        if last["policy"] != policy_name:
            raise NotVerified(f"{label} belongs to policy {last['policy']!r}, not {policy_name!r}")
        cancellations: dict[str, dict] = {}
        for c in sorted(item.cancellations, key=lambda c: c.log_index):
            where = f"{label}: cancellation at log entry {c.log_index}"
            try:
                record = _series.cancellation_record(c.record)
                place(c.log_index, _series.cancellation_entry(record),
                      f"the cancellation of {label}'s occurrence at {record['start']} (log entry {c.log_index})")
            except canonical.CanonicalError as err:
                raise NotVerified(f"series[{n}].cancellations (log entry {c.log_index}): {err}") from None
            if record["series_id"] != first["id"]:
                raise NotVerified(f"{where} is of series {record['series_id']}, not of this one")
            if record["start"] in cancellations:
                # the collector keeps one cancellation per occurrence (the first stands)
                raise NotVerified(f"{where} cancels the occurrence at {record['start']} a second time")
            cancellations[record["start"]] = record
            what = f"the cancellation of {label}'s occurrence at {record['start']}"
            timed.append((c.log_index, when(record["cancelled_at"], what), f"{what}, at {record['cancelled_at']}"))
        out.append((label, last, list(cancellations.values())))
    return out


def _series_rules(logged: list[tuple[str, dict, list]], when) -> tuple[list, int]:
    """The rules core's series (collector.rules.recurrence.MaintenanceSeries) of the logged ones,
    each rule valid as the collector requires when it records one (which also bounds what
    expanding it costs), and every cancellation naming one of its occurrences."""
    from collector.rules.recurrence import RecurrenceError
    out = []
    cancelled_count = 0
    for label, last, cancellations in logged:
        try:
            rules = _series.rules_series(last, cancellations)
        except RecurrenceError as err:
            raise NotVerified(f"{label}: {err}") from None
        except ValueError as err:
            raise NotVerified(f"{label}: {err}") from None
        for record in cancellations:
            moment = when(record["start"], label)
            if not rules.recurrence.is_occurrence(moment):
                raise NotVerified(f"{label}: the cancellation of {record['start']} names no occurrence of "
                                  f"{last['rrule']} from {last['start']}")
        cancelled_count += len(cancellations)
        out.append(rules)
    return out, cancelled_count


def _first_difference(stated: Any, recomputed: Any, path: str, unstated: list[str]) -> str | None:
    """`path: the report says X, the evidence gives Y` for the first figure that differs.

    A figure the evidence gives but the report does not state (a report made by an older
    collector) is listed in `unstated`, not a difference; a figure the report states that the
    rules core does not compute cannot be checked, and is one."""
    here = path or "(the whole report)"
    if isinstance(recomputed, dict) and isinstance(stated, dict):
        for key, value in recomputed.items():
            sub = f"{path}.{key}" if path else key
            if key not in stated:
                unstated.append(sub)
                continue
            found = _first_difference(stated[key], value, sub, unstated)
            if found is not None:
                return found
        for key in stated:
            if key not in recomputed:
                sub = f"{path}.{key}" if path else key
                return (f"'{sub}': the report says {_short(stated[key])}, a figure this verifier does not compute "
                        "(a newer uptime-verify may)")
        return None
    if isinstance(recomputed, list) and isinstance(stated, list):
        for i, (a, b) in enumerate(zip(stated, recomputed)):
            found = _first_difference(a, b, f"{path}[{i}]", unstated)
            if found is not None:
                return found
        if len(stated) != len(recomputed):
            return f"'{here}': the report lists {len(stated)}, the evidence gives {len(recomputed)}"
        return None
    if type(stated) is not type(recomputed) and not (
            isinstance(stated, (int, float)) and isinstance(recomputed, (int, float))
            and not isinstance(stated, bool) and not isinstance(recomputed, bool)):
        return f"'{here}': the report says {_short(stated)}, the evidence gives {_short(recomputed)}"
    if stated != recomputed:
        return f"'{here}': the report says {_short(stated)}, the evidence gives {_short(recomputed)}"
    return None


def _short(value: Any) -> str:
    import json
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


def _agent_key_option(values: Sequence[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for value in values:
        agent, sep, key = value.partition("=")
        if not sep or not agent:
            raise ValueError(f"--agent-key {value!r}: expected AGENT=ed25519:<base64>")
        _keys.parse_public_key(key, f"--agent-key {agent}")
        out.setdefault(agent, set()).add(key)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uptime-verify",
        description="Verify an evidence bundle offline: signatures, the log's proofs, and the report recomputed "
                    "from the evidence. Exit 0 verified, 1 not verified, 2 bad usage or unreadable file.")
    parser.add_argument("file", metavar="FILE", help="the evidence bundle (uptime-collector evidence export)")
    parser.add_argument("--log-key", metavar="KEY",
                        help="the collector's log key <name>+<key id>+<base64> as you obtained it; without it the "
                             "key the bundle names is used, which proves only that the bundle is self-consistent")
    parser.add_argument("--checkpoint", metavar="OLD",
                        help="a checkpoint you kept earlier: check that the log grew from it without being rewritten")
    parser.add_argument("--agent-key", metavar="AGENT=KEY", action="append", default=[],
                        help="an agent's public key (ed25519:<base64>) as you know it; repeat for more")
    parser.add_argument("--all-signatures", action="store_true",
                        help="verify every batch's signature, not only those no later batch of the agent vouches for")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="accept batches the agents did not sign (counted apart in the output)")
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        log_key = parse_vkey(args.log_key) if args.log_key is not None else None
        agent_keys = _agent_key_option(args.agent_key)
    except (NoteError, ValueError) as exc:
        print(f"uptime-verify: {exc}", file=err)
        return 2
    old = None
    if args.checkpoint is not None:
        try:
            with open(args.checkpoint, encoding="utf-8") as fh:
                old = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"uptime-verify: --checkpoint {args.checkpoint}: cannot read: {getattr(exc, 'strerror', None) or exc}",
                  file=err)
            return 2
    try:
        bundle = load_bundle(args.file)
    except UnreadableBundle as exc:
        print(f"uptime-verify: {exc}", file=err)
        return 2
    except BundleError as exc:
        print(f"NOT VERIFIED: {args.file}: {exc}", file=out)
        return 1
    try:
        result = verify_bundle(bundle, log_key=log_key, old_checkpoint=old, agent_keys=agent_keys or None,
                               all_signatures=args.all_signatures, allow_unsigned=args.allow_unsigned)
    except NotVerified as exc:
        print(f"NOT VERIFIED: {exc}", file=out)
        return 1
    print(result.text(), file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
