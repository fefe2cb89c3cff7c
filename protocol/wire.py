"""The wire protocol's messages (docs/wire-protocol.md): a batch of results and a heartbeat, as
an agent sends them and the collector validates them.

Strict types: a "yes" or "200" string is a client bug to report, not a value to guess.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

# "error": null when ok, else one of these (wire-protocol.md). `expect` a tcp check's expected
# banner or reply, `cert_expiry` a TLS certificate too close to (or past) its end, `rcode` and
# `answer` a dns check's response code or answers, `assertion` a journey step's assertion.
ERROR_REASONS = ("dns", "connect", "timeout", "tls", "status", "body", "icmp", "permission", "blocked", "internal",
                 "expect", "cert_expiry", "rcode", "answer", "assertion")

# The most results one batch may carry (an agent's collector.batch_size is bounded by it).
MAX_BATCH = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Bounds of a result's details (wire-protocol.md, "Details"): small enough that a batch of
# MAX_BATCH results stays a few megabytes, large enough for what a probe can tell.
MAX_PHASES = 16
MAX_ANSWERS = 50
MAX_STEPS = 10  # a journey has at most 10 steps (protocol/checks.py)

PhaseName = Annotated[StrictStr, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]
Seconds = Annotated[StrictFloat | StrictInt, Field(ge=0, le=3600)]


def _utc(v: datetime) -> datetime:
    try:
        return v.astimezone(timezone.utc)
    except OverflowError:  # year 1 with a positive offset, or year 9999 with a negative one
        raise ValueError("timestamp out of range") from None


def _unsigned(v: float | int | None) -> float | int | None:
    # -0.0 passes ge=0 (it equals 0) but would be stored and shown as "-0": a duration has no sign
    return abs(v) if v is not None and v == 0 else v


class StepIn(_Strict):
    """One step of a journey, as the agent ran it."""

    name: StrictStr = Field(min_length=1, max_length=128)
    ok: StrictBool
    error: Literal[ERROR_REASONS] | None = None  # type: ignore[valid-type]
    detail: StrictStr | None = Field(default=None, max_length=500)
    status_code: StrictInt | None = Field(default=None, ge=100, le=599)
    latency_ms: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=3_600_000)

    _latency = field_validator("latency_ms")(_unsigned)


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
    # Details (all optional, null or absent alike). `degraded`: ok, but slower than the check's
    # `degraded_after` (never with ok false: the collector refuses that as inconsistent).
    degraded: StrictBool | None = None
    phases: Annotated[dict[PhaseName, Seconds], Field(max_length=MAX_PHASES)] | None = None
    final_url: StrictStr | None = Field(default=None, max_length=2000)
    redirects: StrictInt | None = Field(default=None, ge=0, le=100)
    cert_not_after: AwareDatetime | None = None
    rcode: StrictStr | None = Field(default=None, min_length=1, max_length=16)
    answers: Annotated[list[Annotated[StrictStr, Field(max_length=500)]], Field(max_length=MAX_ANSWERS)] | None = None
    steps: Annotated[list[StepIn], Field(max_length=MAX_STEPS)] | None = None
    failed_step: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    # When the agent scheduled the probe (its own clock), kept as evidence of its lateness.
    scheduled: AwareDatetime | None = None

    @field_validator("cert_not_after", "scheduled", mode="before")
    @classmethod
    def _rfc3339(cls, v: object) -> object:
        # a number would be taken as Unix seconds: the protocol speaks RFC 3339
        if v is not None and not isinstance(v, str):
            raise ValueError("expected an RFC 3339 timestamp string")
        return v

    @field_validator("slot", "started", "cert_not_after", "scheduled")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    _latency = field_validator("latency_ms")(_unsigned)

    @field_validator("phases")
    @classmethod
    def _unsigned_phases(cls, v: dict[str, float | int] | None) -> dict[str, float | int] | None:
        return None if v is None else {k: _unsigned(s) for k, s in v.items()}


# The details kept with a result (collector Result.extra), in wire order.
DETAIL_FIELDS = ("phases", "final_url", "redirects", "cert_not_after", "rcode", "answers", "steps", "failed_step",
                 "scheduled")


class ResultBatch(_Strict):
    agent: StrictStr = Field(min_length=1, max_length=64)
    results: Annotated[list[ResultIn], Field(max_length=MAX_BATCH)]


class Heartbeat(_Strict):
    agent: StrictStr = Field(min_length=1, max_length=64)
    sent: AwareDatetime | None = None
    clock_offset_seconds: StrictFloat | StrictInt | None = Field(default=None, ge=-86400, le=86400)
    spool_results: StrictInt | None = Field(default=None, ge=0)
