"""Validation of what agents send. A batch is accepted whole or refused whole with a message that
names the field (`results[3].slot: ...`) and a list of every result at fault with its own reason,
so that one bad result never holds up the good ones of its batch; nothing a client sends produces
a 500."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Collection, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

ERROR_REASONS = ("dns", "connect", "timeout", "tls", "status", "body", "icmp", "permission", "blocked", "internal")

# Results older than this are refused: nothing evaluates them any more, and a wildly old timestamp
# is far likelier a broken clock than a replay (the agent spool's own age bound is 7 days).
MAX_RESULT_AGE = timedelta(days=35)
# Agents poll on wall-clock slots; a slot in the future beyond this skew means the agent's clock
# runs ahead and its rounds would be attributed to the wrong slot.
MAX_FUTURE_SKEW = timedelta(seconds=30)
MAX_BATCH = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResultIn(_Strict):
    id: StrictStr = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    check: StrictStr = Field(min_length=1, max_length=128)
    slot: AwareDatetime
    started: AwareDatetime
    # Strict types: a "yes" or "200" string is a client bug to report, not a value to guess.
    ok: StrictBool
    latency_ms: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=3_600_000)
    status_code: StrictInt | None = Field(default=None, ge=100, le=599)
    error: Literal[ERROR_REASONS] | None = None  # type: ignore[valid-type]
    detail: StrictStr | None = Field(default=None, max_length=500)

    @field_validator("slot", "started")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        try:
            return v.astimezone(timezone.utc)
        except OverflowError:  # year 1 with a positive offset, or year 9999 with a negative one
            raise ValueError("timestamp out of range") from None


class ResultBatch(_Strict):
    agent: StrictStr = Field(min_length=1, max_length=64)
    results: Annotated[list[ResultIn], Field(max_length=MAX_BATCH)]


class Heartbeat(_Strict):
    agent: StrictStr = Field(min_length=1, max_length=64)
    sent: AwareDatetime | None = None
    clock_offset_seconds: StrictFloat | StrictInt | None = Field(default=None, ge=-86400, le=86400)
    spool_results: StrictInt | None = Field(default=None, ge=0)


class RequestError(Exception):
    """A client's mistake: answered with `status` and {"error": message, **extra}. `reason`, when
    given, is what the ingest-rejection metric counts it under."""

    def __init__(self, message: str, status: int = 400, *, reason: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.extra = extra


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        parts.append(f"{_location(e['loc']) or 'body'}: {_message(e)}")
    more = len(err.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _location(loc: tuple) -> str:
    text = ""
    for p in loc:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _message(e: dict) -> str:
    return "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")


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
                rejected[loc[1]] = {"index": loc[1], "reason": "schema", "error": f"{_location(loc)}: {_message(e)}"}
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
