"""Validation of what agents send. A batch is accepted whole or refused whole with a message that
names the field (`results[3].slot: ...`); nothing a client sends produces a 500."""

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
    agent: str = Field(min_length=1, max_length=64)
    sent: AwareDatetime | None = None
    clock_offset_seconds: float | None = Field(default=None, ge=-86400, le=86400)
    spool_results: int | None = Field(default=None, ge=0)


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ""
        for p in e["loc"]:
            loc += f"[{p}]" if isinstance(p, int) else (f".{p}" if loc else str(p))
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc or 'body'}: {msg}")
    more = len(err.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_batch(payload: Any) -> ResultBatch:
    try:
        return ResultBatch.model_validate(payload)
    except ValidationError as err:
        raise RequestError(describe(err), 422) from None


def check_batch(batch: ResultBatch, known_checks: Collection[str], now: datetime, *,
                max_age: timedelta = MAX_RESULT_AGE, max_skew: timedelta = MAX_FUTURE_SKEW,
                removed: dict[str, datetime] | None = None) -> list[dict[str, Any]]:
    """Refuse the whole batch when any result is unusable; return rows ready for the store.

    A removed check's results of slots before its removal are still evidence (an agent's spool
    may hold them for a while); later ones are refused."""
    removed = removed or {}
    rows = []
    for i, r in enumerate(batch.results):
        where = f"results[{i}]"
        if r.check not in known_checks:
            gone = removed.get(r.check)
            if gone is None:
                raise RequestError(f"{where}.check: unknown check {r.check!r}", 422)
            if r.slot >= gone:
                raise RequestError(f"{where}.check: check {r.check!r} was removed at {gone.isoformat()}", 422)
        if r.slot > now + max_skew:
            raise RequestError(f"{where}.slot: {r.slot.isoformat()} lies in the future (collector time {now.isoformat()}); check the agent's clock", 422)
        if r.slot < now - max_age:
            raise RequestError(f"{where}.slot: {r.slot.isoformat()} is older than the collector accepts "
                               f"({max_age.total_seconds() / 86400:g} days)", 422)
        if r.ok and r.error is not None:
            raise RequestError(f"{where}.error: a successful result has no error reason", 422)
        if not r.ok and r.error is None:
            raise RequestError(f"{where}.error: a failed result needs an error reason", 422)
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
    return rows
