"""Making evidence the way agents and the collector will: an agent signing its batches in a
chain, a collector logging what it accepts, and the export of a bundle from what it keeps.

Everything is in memory. It is the reference for the collector's export (which reads the same
things from its database) and what the tests and the benchmark build bundles with.

    log = MemoryLog("uptime.example.com/log", log_key)
    keeper = EvidenceKeeper(log)
    agent = AgentSigner("eu-west", agent_key)
    keeper.register_key("eu-west", public_key_text(agent_key), at)
    signed = agent.sign(results)                 # canonical result objects
    keeper.accept_batch("eu-west", results, signed, received_at)
    agent.acknowledged(signed)                   # after the collector's 200
    bundle = keeper.export_report(policy, "2026-11", as_of=..., now=...)
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import canonical, merkle, series as _series
from .bundle import FORMAT, node_key
from .checkpoint import Checkpoint, format_vkey, sign_checkpoint
from .canonical import canonical_time

__all__ = ["MemoryLog", "AgentSigner", "EvidenceKeeper", "StoredBatch", "evidence_margin", "observations_of"]


class MemoryLog:
    """An append-only log: entries' canonical bytes in order, and their RFC 6962 leaf hashes."""

    def __init__(self, origin: str, key: Ed25519PrivateKey):
        self.origin, self.key = origin, key
        self.entries: list[bytes] = []
        self.leaves: list[bytes] = []
        self.cache: dict = {}

    @property
    def size(self) -> int:
        return len(self.leaves)

    @property
    def vkey(self) -> str:
        return format_vkey(self.origin, self.key)

    def append(self, entry: bytes) -> int:
        self.entries.append(entry)
        self.leaves.append(canonical.entry_leaf_hash(entry))
        return len(self.leaves) - 1

    def checkpoint(self, time: datetime, size: int | None = None) -> str:
        size = self.size if size is None else size
        head = merkle.subtree_hash(self.leaves, 0, size, self.cache) if size else merkle.EMPTY_ROOT
        return sign_checkpoint(Checkpoint(self.origin, size, head, time), self.key)

    def nodes(self, indices: Iterable[int], size: int | None = None) -> dict:
        return merkle.proof_nodes(indices, self.size if size is None else size, self.leaves, self.cache)

    def consistency(self, first: int, second: int | None = None) -> list[bytes]:
        return merkle.consistency_proof(first, self.size if second is None else second, self.leaves, self.cache)


class AgentSigner:
    """An agent's side of signing: its key and the hash of its last acknowledged statement."""

    def __init__(self, agent: str, key: Ed25519PrivateKey, prev: str | None = None):
        self.agent, self.key, self.prev = agent, key, prev

    def sign(self, results: Sequence[Mapping[str, Any]]) -> canonical.SignedBatch:
        return canonical.sign_batch(self.key, self.agent, self.prev, results)

    def acknowledged(self, signed: canonical.SignedBatch) -> None:
        """After the collector's 200: the next statement names this one."""
        self.prev = signed.batch_hash


@dataclass
class StoredBatch:
    agent: str
    prev: str | None
    key_id: str | None
    signature: str | None
    received_at: datetime
    log_index: int
    results: list[dict]                       # canonical result objects, in the batch's order
    digests: list[bytes] = field(default_factory=list)


def evidence_margin(policy) -> timedelta:
    """How far beyond the period the report reads results (collector.reporting: a run crossing
    the edges is judged whole)."""
    return timedelta(days=1) + timedelta(seconds=policy.min_duration)


def observations_of(agent_results: Iterable[tuple[str, Mapping[str, Any]]], components: Iterable[str]):
    """Observations (collector.rules) of (agent, canonical result) pairs of the given checks."""
    from collector.rules.model import Observation
    from protocol.timestamps import parse_rfc3339
    wanted = set(components)
    cache: dict[str, datetime] = {}
    with_degraded = "degraded" in getattr(Observation, "__dataclass_fields__", {})
    out = []
    for agent, r in agent_results:
        if r["check"] in wanted:
            ts = cache.get(r["slot"])
            if ts is None:
                ts = cache[r["slot"]] = parse_rfc3339(r["slot"])
            if with_degraded:
                out.append(Observation(agent, r["check"], ts, r["ok"], r.get("degraded") is True and r["ok"]))
            else:
                out.append(Observation(agent, r["check"], ts, r["ok"]))
    return out


class EvidenceKeeper:
    """What the collector keeps for evidence, and the export of bundles from it."""

    def __init__(self, log: MemoryLog):
        self.log = log
        self.keys: dict[str, list[dict]] = {}        # agent -> [{key, registered_at, log_index, revoked...}]
        self.batches: list[StoredBatch] = []
        self.maintenance: dict[int, list[tuple[int, dict]]] = {}   # id -> [(log_index, record)]
        self.stored: dict[tuple[str, str], dict] = {}               # (agent, result id) -> first stored
        self.series: dict[int, list[tuple[int, dict]]] = {}        # series id -> [(log_index, record)]
        self.occurrence_cancellations: dict[int, list[tuple[int, dict]]] = {}  # series id -> [(log_index, record)]
        self._slots: dict[str, datetime] = {}

    # -- what the collector does as things happen --------------------------------------------
    def register_key(self, agent: str, public_key: str, at: datetime) -> int:
        index = self.log.append(canonical.agent_key_entry(agent, public_key, at))
        self.keys.setdefault(agent, []).append({"key": public_key, "registered_at": canonical_time(at),
                                                "log_index": index})
        return index

    def revoke_key(self, agent: str, public_key: str, at: datetime) -> int:
        index = self.log.append(canonical.agent_key_revocation_entry(agent, public_key, at))
        for entry in self.keys[agent]:
            if entry["key"] == public_key:
                entry.update(revoked_at=canonical_time(at), revoked_log_index=index)
        return index

    def accept_batch(self, agent: str, results: Sequence[dict], signed: canonical.SignedBatch | None,
                     received_at: datetime) -> StoredBatch:
        digests = [canonical.result_digest(r) for r in results]
        if signed is not None:
            prev = canonical._statement_prev(signed.statement)
            statement = canonical.batch_statement(agent, prev, len(results), canonical.results_sha256(digests))
            if statement != signed.statement:
                raise ValueError("the signed statement is not the one of these results")
            bhash, key_id, sig = signed.batch_hash, signed.key_id, signed.signature
        else:
            prev = key_id = sig = None
            bhash = canonical.batch_hash(canonical.batch_statement(agent, None, len(results),
                                                                   canonical.results_sha256(digests)))
        index = self.log.append(canonical.batch_entry(agent, bhash, key_id, sig, received_at))
        stored = StoredBatch(agent, prev, key_id, sig, received_at, index, list(results), digests)
        self.batches.append(stored)
        for r in results:
            self.stored.setdefault((agent, r["id"]), r)
        return stored

    def record_maintenance(self, record: Mapping[str, Any]) -> int:
        canon = canonical.maintenance_record(record)
        index = self.log.append(canonical.maintenance_entry(canon))
        self.maintenance.setdefault(canon["id"], []).append((index, canon))
        return index

    def cancel_maintenance(self, record_id: int, at: datetime, by: str, reason: str) -> int:
        record = dict(self.maintenance[record_id][-1][1])
        record.update(cancelled_at=canonical_time(at), cancelled_by=by, cancel_reason=reason)
        return self.record_maintenance(record)

    def record_series(self, record: Mapping[str, Any]) -> int:
        """A recurring maintenance series recorded (evidence.series.SERIES_FIELDS)."""
        canon = _series.series_record(record)
        index = self.log.append(_series.series_entry(canon))
        self.series.setdefault(canon["id"], []).append((index, canon))
        return index

    def cancel_series(self, series_id: int, at: datetime, by: str, reason: str) -> int:
        record = dict(self.series[series_id][-1][1])
        record.update(cancelled_at=canonical_time(at), cancelled_by=by, cancel_reason=reason)
        return self.record_series(record)

    def cancel_occurrence(self, series_id: int, start: datetime, at: datetime, by: str, reason: str = "") -> int:
        canon = _series.cancellation_record({"series_id": series_id, "start": start, "cancelled_at": at,
                                             "cancelled_by": by, "cancel_reason": reason})
        index = self.log.append(_series.cancellation_entry(canon))
        self.occurrence_cancellations.setdefault(series_id, []).append((index, canon))
        return index

    # -- export ------------------------------------------------------------------------------
    def series_touching(self, policy_name: str, lo: datetime, hi: datetime) -> list[tuple[int, Any]]:
        """(series id, collector.rules.recurrence.MaintenanceSeries) of every series of the policy
        with an occurrence (cancelled ones too) overlapping [lo, hi): the range a report or claim
        expands its series over (whole local months). Each occurrence cancellation counts from its
        first log entry: the first cancellation stands, as in the collector's table."""
        out = []
        for series_id, versions in sorted(self.series.items()):
            last = versions[-1][1]
            if last["policy"] != policy_name:
                continue
            rules = _series.rules_series(last, self._cancellations_of(series_id), validate=False)
            if rules.announcements(lo, hi):
                out.append((series_id, rules))
        return out

    def _cancellations_of(self, series_id: int) -> list[dict]:
        first: dict[str, dict] = {}
        for _, record in self.occurrence_cancellations.get(series_id, ()):
            first.setdefault(record["start"], record)
        return list(first.values())

    def _series_range(self, policy, kind: str, period: str | None, start: datetime | None, end: datetime | None):
        """The range the rules core expands series over: a month's report its month
        (rules.offline.evaluate_offline), a claim its whole local months (verify_claim_offline)."""
        from collector.rules.periods import month_bounds
        from collector.rules.recurrence import judged_range
        if kind == "report":
            return month_bounds(period, policy.tz)
        return judged_range(policy.tz, start, end)

    def announcements(self, policy_name: str):
        from collector.rules.model import Announcement
        from protocol.timestamps import parse_rfc3339

        def ts(value):
            return None if value is None else parse_rfc3339(value)
        out = []
        for versions in self.maintenance.values():
            r = versions[-1][1]
            if r["policy"] != policy_name:
                continue
            out.append(Announcement(kind=r["kind"], announced=ts(r["stated_announced"]), start=ts(r["start"]),
                                    end=ts(r["end"]), note=r["note"], recorded_at=ts(r["recorded_at"]),
                                    recorded_by=r["recorded_by"], author=r["author"],
                                    cancelled_at=ts(r["cancelled_at"]), cancel_reason=r["cancel_reason"] or "",
                                    id=r["id"]))
        return sorted(out, key=lambda a: (a.start, a.id))

    def _in_range(self, r: Mapping[str, Any], wanted: set, lo: datetime, hi: datetime) -> bool:
        if r["check"] not in wanted:
            return False
        slot = self._slots.get(r["slot"])
        if slot is None:
            from protocol.timestamps import parse_rfc3339
            slot = self._slots[r["slot"]] = parse_rfc3339(r["slot"])
        return lo <= slot < hi

    def _select(self, components: Sequence[str], lo: datetime, hi: datetime) -> list[StoredBatch]:
        """Each agent's run of batches, in log order, from its first to its last batch holding a
        result of the components in [lo, hi): the chain must be whole between them."""
        wanted = set(components)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for n, b in enumerate(self.batches):
            if any(self._in_range(r, wanted, lo, hi) for r in b.results):
                first.setdefault(b.agent, n)
                last[b.agent] = n
        return [b for n, b in enumerate(self.batches) if b.agent in first and first[b.agent] <= n <= last[b.agent]]

    def _bundle(self, policy, kind: str, lo: datetime, hi: datetime, report: dict, inputs: dict, *,
                now: datetime, extra: dict, old_sizes: Sequence[int], series_ids: Sequence[int] = ()) -> dict:
        chosen = self._select(policy.components, lo, hi)
        wanted = set(policy.components)
        batches = []
        indices = []
        for b in chosen:
            entry = {"agent": b.agent, "prev": b.prev, "key_id": b.key_id, "signature": b.signature,
                     "received_at": canonical_time(b.received_at), "log_index": b.log_index}
            shown = [r if self._in_range(r, wanted, lo, hi) else {"digest": d.hex()}
                     for r, d in zip(b.results, b.digests)]
            if any("digest" not in r for r in shown):
                entry["results"] = shown
            else:
                entry.update(count=len(b.digests), results_sha256=canonical.results_sha256(b.digests))
            batches.append(entry)
            indices.append(b.log_index)
        agents_used = sorted({b.agent for b in chosen})
        agents = []
        for agent in agents_used:
            ks = [dict(k) for k in self.keys.get(agent, [])]
            indices += [k["log_index"] for k in ks] + [k["revoked_log_index"] for k in ks if "revoked_log_index" in k]
            agents.append({"agent": agent, "keys": ks})
        maintenance = []
        for versions in self.maintenance.values():
            if versions[-1][1]["policy"] == policy.name:
                maintenance.append({"versions": [{"log_index": i, "record": r} for i, r in versions]})
                indices += [i for i, _ in versions]
        series = []
        for series_id in series_ids:
            versions = self.series[series_id]
            cancellations = self.occurrence_cancellations.get(series_id, [])
            series.append({"versions": [{"log_index": i, "record": r} for i, r in versions],
                           "cancellations": [{"log_index": i, "record": r} for i, r in cancellations]})
            indices += [i for i, _ in versions] + [i for i, _ in cancellations]
        size = self.log.size
        nodes = self.log.nodes(indices, size)
        return {
            "format": FORMAT, "kind": kind, "created_at": canonical_time(now),
            "policy": {"name": policy.name, "hash": policy.content_hash(), "rule": policy.model_dump(mode="json")},
            **extra, "inputs": inputs, "report": report,
            "log": {"origin": self.log.origin, "key": self.log.vkey, "checkpoint": self.log.checkpoint(now, size),
                    "consistency": [{"from_size": m, "hashes": [base64.b64encode(h).decode("ascii")
                                                                for h in self.log.consistency(m, size)]}
                                    for m in old_sizes]},
            "agents": agents, "batches": batches, "maintenance": maintenance, "series": series,
            "proof": {"tree_size": size,
                      "nodes": {node_key(*k): base64.b64encode(v).decode("ascii") for k, v in sorted(nodes.items())}},
        }

    def _observations(self, policy, lo: datetime, hi: datetime):
        wanted = set(policy.components)
        pairs = [(agent, r) for (agent, _), r in self.stored.items() if self._in_range(r, wanted, lo, hi)]
        return observations_of(pairs, policy.components)

    def export_report(self, policy, period: str, *, now: datetime, as_of: datetime | None = None,
                      expected_by_component: dict[str, list[str]] | None = None,
                      history: Sequence[tuple[str, float | None]] | None = None, fee: float | None = None,
                      old_sizes: Sequence[int] = ()) -> dict:
        """The bundle of a month's report, as `uptime-collector evidence export --policy --period`
        will write it: the report computed as the collector computes it (collector.reporting)."""
        from collector.rules.offline import evaluate_offline
        from collector.rules.periods import month_bounds
        start, end = month_bounds(period, policy.tz)
        margin = evidence_margin(policy)
        lo, hi = start - margin, end + margin
        touching = self.series_touching(policy.name, *self._series_range(policy, "report", period, None, None))
        report = evaluate_offline(policy, self._observations(policy, lo, hi), period,
                                  [*self.announcements(policy.name), *(s for _, s in touching)], now=as_of,
                                  history=list(history) if history else None,
                                  fee=fee, expected_by_component=expected_by_component)
        inputs = {"as_of": None if as_of is None else canonical_time(as_of),
                  "expected_by_component": expected_by_component,
                  "history": [{"period": p, "availability_percent": a} for p, a in (history or [])], "fee": fee}
        return self._bundle(policy, "report", lo, hi, _plain(report), inputs, now=now, extra={"period": period},
                            old_sizes=old_sizes, series_ids=[i for i, _ in touching])

    def export_claim(self, policy, start: datetime, end: datetime, *, now: datetime, as_of: datetime | None = None,
                     expected_by_component: dict[str, list[str]] | None = None, old_sizes: Sequence[int] = ()) -> dict:
        """The bundle of a claimed outage checked against the evidence (verify_claim_offline)."""
        from collector.rules.offline import verify_claim_offline
        margin = evidence_margin(policy)
        lo, hi = start - margin, end + margin
        touching = self.series_touching(policy.name, *self._series_range(policy, "claim", None, start, end))
        claim = verify_claim_offline(policy, self._observations(policy, lo, hi), start, end,
                                     [*self.announcements(policy.name), *(s for _, s in touching)], now=as_of,
                                     expected_by_component=expected_by_component)
        inputs = {"as_of": None if as_of is None else canonical_time(as_of),
                  "expected_by_component": expected_by_component, "history": [], "fee": None}
        return self._bundle(policy, "claim", lo, hi, _plain(claim), inputs, now=now,
                            extra={"claim": {"start": canonical_time(start), "end": canonical_time(end)}},
                            old_sizes=old_sizes, series_ids=[i for i, _ in touching])


def _plain(value: Any) -> Any:
    """A report as JSON gives it back (tuples as lists, and so on)."""
    import json
    return json.loads(json.dumps(value, default=str))


def result_for(agent: str, check: str, slot: datetime, ok: bool, *, degraded: bool = False,
               details: Mapping[str, Any] | None = None) -> dict:
    """A plausible canonical result of one probe (a deterministic id, an HTTP-like outcome)."""
    import hashlib
    rid = hashlib.sha256(f"{agent}|{check}|{slot.isoformat()}".encode()).hexdigest()[:32]
    return canonical.result_object({
        "id": rid, "check": check, "slot": slot, "started": slot + timedelta(milliseconds=13), "ok": ok,
        "latency_ms": (2500.0 if degraded else 12.5) if ok else None, "status_code": 200 if ok else None,
        "error": None if ok else "timeout", "detail": None if ok else "no answer within 10s",
        "degraded": degraded, **(details or {})})


def bundle_from_observations(policy, period: str, observations: Iterable, *, agent_keys: Mapping[str, Ed25519PrivateKey],
                             log_key: Ed25519PrivateKey, maintenance: Sequence[Mapping[str, Any]] = (),
                             series: Sequence[Mapping[str, Any]] = (),
                             origin: str = "uptime.example.com/log", results_per_batch: int = 1,
                             received_delay: timedelta = timedelta(seconds=2), now: datetime | None = None,
                             as_of: datetime | None = None, expected_by_component: dict[str, list[str]] | None = None,
                             old_sizes: Sequence[int] = ()) -> tuple[dict, EvidenceKeeper]:
    """A report bundle made the way agents and the collector make one, from observations
    (anything with agent, check, ts, ok): each agent signs its results in batches of
    `results_per_batch` in slot order, chained; the collector logs the keys first, then batches
    and maintenance records (canonical maintenance_record fields) and series (evidence.series
    SERIES_FIELDS, plus optional `cancelled_occurrences` [{start, cancelled_at, cancelled_by,
    cancel_reason}]; a series with `cancelled_at` is logged recorded, then cancelled) in the order
    of their times."""
    obs = sorted(observations, key=lambda o: (o.ts, o.agent, o.check))
    if not obs:
        raise ValueError("no observations")
    keeper = EvidenceKeeper(MemoryLog(origin, log_key))
    start = obs[0].ts - timedelta(days=2)
    from .keys import public_key_text
    signers = {agent: AgentSigner(agent, key) for agent, key in agent_keys.items()}
    pending: dict[str, list] = {}
    events: list[tuple[datetime, int, str, Any]] = []
    for o in obs:
        batch = pending.setdefault(o.agent, [])
        batch.append(result_for(o.agent, o.check, o.ts, o.ok))
        if len(batch) >= results_per_batch:
            events.append((o.ts + received_delay, len(events), o.agent, pending.pop(o.agent)))
    for agent, batch in pending.items():
        events.append((obs[-1].ts + received_delay, len(events), agent, batch))
    from protocol.timestamps import parse_rfc3339
    for record in maintenance:
        events.append((parse_rfc3339(canonical.maintenance_record(record)["recorded_at"]), len(events), "", record))
    for item in series:
        record = {k: v for k, v in item.items() if k != "cancelled_occurrences"}
        canon = _series.series_record(record)
        recorded = dict(canon, cancelled_at=None, cancelled_by=None, cancel_reason=None)
        events.append((parse_rfc3339(canon["recorded_at"]), len(events), "\x00series", recorded))
        if canon["cancelled_at"] is not None:
            events.append((parse_rfc3339(canon["cancelled_at"]), len(events), "\x00series", canon))
        for c in item.get("cancelled_occurrences", ()):
            c = _series.cancellation_record({"series_id": canon["id"], "cancel_reason": "", **c})
            events.append((parse_rfc3339(c["cancelled_at"]), len(events), "\x00occurrence", c))
    events.sort(key=lambda e: (e[0], e[1]))
    # the keys first, logged no later than anything after them (a series recorded weeks ahead)
    start = min([start, *(at for at, _, agent, _ in events if agent in ("", "\x00series", "\x00occurrence"))])
    for agent in sorted(agent_keys):
        keeper.register_key(agent, public_key_text(agent_keys[agent]), start)
    for at, _, agent, item in events:
        if not agent:
            keeper.record_maintenance(item)
            continue
        if agent == "\x00series":
            keeper.record_series(item)
            continue
        if agent == "\x00occurrence":
            keeper.occurrence_cancellations.setdefault(item["series_id"], []).append(
                (keeper.log.append(_series.cancellation_entry(item)), item))
            continue
        signed = signers[agent].sign(item)
        keeper.accept_batch(agent, item, signed, at)
        signers[agent].acknowledged(signed)
    now = now or max(events[-1][0], obs[-1].ts) + timedelta(days=2)
    bundle = keeper.export_report(policy, period, now=now, as_of=as_of, expected_by_component=expected_by_component,
                                  old_sizes=old_sizes)
    return bundle, keeper
