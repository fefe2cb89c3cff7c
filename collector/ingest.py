"""Validation of what agents send. A batch is accepted whole or refused whole with a message that
names the field (`results[3].slot: ...`) and a list of every result at fault with its own reason,
so that one bad result never holds up the good ones of its batch; nothing a client sends produces
a 500."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Collection, Mapping, Sequence

from pydantic import ValidationError

from collector.errors import RequestError, describe, location, pydantic_message
from protocol.timestamps import slot_of
from protocol.wire import DETAIL_FIELDS, ResultBatch, ResultIn

# Results older than this are refused: nothing evaluates them any more, and a wildly old timestamp
# is far likelier a broken clock than a replay (the agent spool's own age bound is 7 days).
MAX_RESULT_AGE = timedelta(days=35)
# Agents poll on wall-clock slots; a slot in the future beyond this skew means the agent's clock
# runs ahead and its rounds would be attributed to the wrong slot.
MAX_FUTURE_SKEW = timedelta(seconds=30)


def parse_batch(payload: Any) -> ResultBatch:
    """The batch's shape and types. A refusal lists every result at fault (`rejected`, by index),
    so that the agent sets aside exactly those and ships the rest again."""
    try:
        return ResultBatch.model_validate(payload)
    except ValidationError as err:
        rejected: dict[int, dict[str, Any]] = {}
        whole = False  # a fault outside the results (the agent field, the list itself) concerns them all
        for e in err.errors():
            loc = e["loc"]
            if not (len(loc) >= 2 and loc[0] == "results" and isinstance(loc[1], int)):
                whole = True
            elif loc[1] not in rejected:
                rejected[loc[1]] = {"index": loc[1], "reason": "schema", "error": f"{location(loc)}: {pydantic_message(e)}"}
        extra = {} if whole or not rejected else {"rejected": [rejected[i] for i in sorted(rejected)]}
        raise RequestError(describe(err), 422, reason="schema", **extra) from None


# Why one result of a batch is refused (counted per reason in uptime_collector_results_refused_total).
# `conflict` is decided by the store: the agent already voted in that check and slot.
REFUSAL_REASONS = ("schema", "unknown_check", "check_removed", "future", "too_old", "inconsistent", "conflict")


def check_batch(batch: ResultBatch, known_checks: Collection[str], now: datetime, *,
                max_age: timedelta = MAX_RESULT_AGE, max_skew: timedelta = MAX_FUTURE_SKEW,
                removed: dict[str, datetime] | None = None,
                intervals: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Rows ready for the store, or a refusal of the whole batch (nothing is stored) that names
    every result at fault with its own reason (`rejected`: index, id, reason, error).

    A removed check's results of slots before its removal are still evidence (an agent's spool
    may hold them for a while); later ones are refused. `intervals` (check name -> seconds) bounds
    each result's `started` to its own slot; a check missing there is bounded below only."""
    removed = removed or {}
    intervals = intervals or {}
    rows = []
    refused: list[dict[str, Any]] = []
    for i, r in enumerate(batch.results):
        problem = _problem(r, f"results[{i}]", known_checks, removed, now, max_age, max_skew, intervals.get(r.check))
        if problem is not None:
            reason, message = problem
            refused.append({"index": i, "id": r.id, "reason": reason, "error": message})
            continue
        rows.append(
            {
                "result_id": r.id,
                "check": r.check,
                "slot": r.slot,
                "started": r.started,
                "ok": r.ok,
                "latency_ms": r.latency_ms,
                "status_code": r.status_code,
                "error": r.error,
                "detail": r.detail,
                "received_at": now,
                "degraded": bool(r.degraded),
                "extra": details(r),
            }
        )
    if refused:
        more = f" (and {len(refused) - 1} more results refused; see 'rejected')" if len(refused) > 1 else ""
        raise RequestError(refused[0]["error"] + more, 422, reason="invalid", rejected=refused)
    return rows


def details(r: ResultIn) -> dict[str, Any] | None:
    """The result's details as kept in Result.extra (JSON: timestamps in RFC 3339 UTC); None when
    it carries none."""
    out = {}
    for name in DETAIL_FIELDS:
        value = getattr(r, name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        elif name == "steps":
            value = [step.model_dump() for step in value]
        out[name] = value
    return out or None


def raise_conflicts(conflicts: Collection[dict[str, Any]]) -> None:
    """Refuse the whole batch for the results the store found voting again in a slot (`conflict`),
    in the same shape as check_batch's refusals."""
    if conflicts:
        listed = sorted(conflicts, key=lambda c: c["index"])
        more = f" (and {len(listed) - 1} more results refused; see 'rejected')" if len(listed) > 1 else ""
        raise RequestError(listed[0]["error"] + more, 422, reason="invalid", rejected=listed)


def _problem(r: ResultIn, where: str, known_checks: Collection[str], removed: dict[str, datetime], now: datetime,
             max_age: timedelta, max_skew: timedelta, interval: float | None) -> tuple[str, str] | None:
    if r.check not in known_checks:
        gone = removed.get(r.check)
        if gone is None:
            return "unknown_check", f"{where}.check: unknown check {r.check!r}"
        if r.slot >= gone:
            return "check_removed", f"{where}.check: check {r.check!r} was removed at {gone.isoformat()}"
    for name in ("slot", "started"):
        value: datetime = getattr(r, name)
        if value > now + max_skew:
            return "future", (f"{where}.{name}: {value.isoformat()} lies in the future (collector time "
                              f"{now.isoformat()}); check the agent's clock")
    if r.slot < now - max_age:
        return "too_old", (f"{where}.slot: {r.slot.isoformat()} is older than the collector accepts "
                           f"({max_age.total_seconds() / 86400:g} days)")
    # A probe starts within its own slot: at the slot or after it (jitter, lateness), and before
    # the next one (the agent skips a slot it is too late for). A `started` outside it is not an
    # observation of that slot: a success "started" a day later must not vote in a past round.
    # The clock skew allowance applies on both sides.
    if r.started < r.slot - max_skew:
        return "inconsistent", f"{where}.started: {r.started.isoformat()} lies before its slot {r.slot.isoformat()}"
    # A slot is a multiple of the check's interval since the epoch (wire-protocol.md). One off by a
    # millisecond would be a second vote of the agent in the same round, which the round would read
    # as "success wins": refused, so that one vote per agent and round is all there is.
    if interval is not None and slot_of(r.slot, interval) != r.slot:
        return "inconsistent", (f"{where}.slot: {r.slot.isoformat()} is not a slot of check {r.check!r} "
                                f"(a multiple of its interval, {interval:g} s, since the epoch: "
                                f"{slot_of(r.slot, interval).isoformat()} would be)")
    if interval is not None and r.started >= r.slot + timedelta(seconds=interval) + max_skew:
        return "inconsistent", (f"{where}.started: {r.started.isoformat()} lies after its slot "
                                f"{r.slot.isoformat()} ended (interval {interval:g} s)")
    if r.ok and r.error is not None:
        return "inconsistent", f"{where}.error: a successful result has no error reason"
    if not r.ok and r.error is None:
        return "inconsistent", f"{where}.error: a failed result needs an error reason"
    # A failure is never merely degraded: degraded says an ok probe was slow (degraded_after).
    if r.degraded and not r.ok:
        return "inconsistent", f"{where}.degraded: a failed result is not degraded (degraded means ok but slow)"
    if r.ok and r.failed_step is not None:
        return "inconsistent", f"{where}.failed_step: a successful result has no failed step"
    return None


# -- signed batches (docs/evidence.md, "On the wire") ---------------------------------------------

def parse_signature(header: str | None) -> tuple[str, str | None, str] | None:
    """(key id, prev, signature) of the Uptime-Batch-Signature header; None without one. A
    malformed header is refused (422) with the format it should have."""
    from evidence.canonical import CanonicalError, parse_signature_header
    if header is None:
        return None
    try:
        return parse_signature_header(header)
    except CanonicalError as err:
        raise RequestError(str(err), 422, reason="signature") from None


def result_digests(rows: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """The digest of each row's canonical result object, in the batch's order: the collector
    rebuilds what the agent signed from the values it validated and stores."""
    from evidence.canonical import result_digest, result_object
    return [result_digest(result_object(row)) for row in rows]


def batch_statement_of(agent: str, prev: str | None, digests: Sequence[bytes]) -> tuple[bytes, str]:
    """The batch's statement and its batch hash."""
    from evidence.canonical import batch_hash, batch_statement, results_sha256
    statement = batch_statement(agent, prev, len(digests), results_sha256(digests))
    return statement, batch_hash(statement)


def verify_signature(agent: str, key_id: str, public_key: str | None, statement: bytes, signature: str) -> None:
    """Refuse (422) a batch whose signature is by no registered key of the agent, or does not
    verify over the statement rebuilt from its results."""
    from evidence.canonical import SIGNATURE_HEADER, verify_batch_signature
    from evidence.keys import parse_public_key
    if public_key is None:
        raise RequestError(f"header {SIGNATURE_HEADER}: key: agent {agent!r} has no registered key {key_id} "
                           "that is not revoked (register the agent's public key with `uptime-collector agents add --public-key` or "
                           "the config's public_key)", 422, reason="signature")
    if not verify_batch_signature(parse_public_key(public_key), statement, signature):
        raise RequestError(f"header {SIGNATURE_HEADER}: sig: the signature does not verify with agent {agent!r}'s "
                           f"key {key_id} over these results and prev: the results, the agent or prev differ from "
                           "what was signed", 422, reason="signature")
