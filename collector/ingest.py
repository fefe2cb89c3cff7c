"""Validation of what agents send. A batch is accepted whole or refused whole with a message that
names the field (`results[3].slot: ...`) and a list of every result at fault with its own reason,
so that one bad result never holds up the good ones of its batch; nothing a client sends produces
a 500."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Collection

from pydantic import ValidationError

from collector.errors import RequestError, describe, location, pydantic_message
from protocol.wire import ResultBatch, ResultIn

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
REFUSAL_REASONS = ("schema", "unknown_check", "check_removed", "future", "too_old", "inconsistent")


def check_batch(batch: ResultBatch, known_checks: Collection[str], now: datetime, *,
                max_age: timedelta = MAX_RESULT_AGE, max_skew: timedelta = MAX_FUTURE_SKEW,
                removed: dict[str, datetime] | None = None) -> list[dict[str, Any]]:
    """Rows ready for the store, or a refusal of the whole batch (nothing is stored) that names
    every result at fault with its own reason (`rejected`: index, id, reason, error).

    A removed check's results of slots before its removal are still evidence (an agent's spool
    may hold them for a while); later ones are refused."""
    removed = removed or {}
    rows = []
    refused: list[dict[str, Any]] = []
    for i, r in enumerate(batch.results):
        problem = _problem(r, f"results[{i}]", known_checks, removed, now, max_age, max_skew)
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
            }
        )
    if refused:
        more = f" (and {len(refused) - 1} more results refused; see 'rejected')" if len(refused) > 1 else ""
        raise RequestError(refused[0]["error"] + more, 422, reason="invalid", rejected=refused)
    return rows


def _problem(r: ResultIn, where: str, known_checks: Collection[str], removed: dict[str, datetime], now: datetime,
             max_age: timedelta, max_skew: timedelta) -> tuple[str, str] | None:
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
    # A probe starts at its slot or after it (jitter, lateness), never long before it.
    if r.started < r.slot - max_skew:
        return "inconsistent", f"{where}.started: {r.started.isoformat()} lies before its slot {r.slot.isoformat()}"
    if r.ok and r.error is not None:
        return "inconsistent", f"{where}.error: a successful result has no error reason"
    if not r.ok and r.error is None:
        return "inconsistent", f"{where}.error: a failed result needs an error reason"
    return None
