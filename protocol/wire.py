"""The wire protocol's messages (docs/wire-protocol.md): a batch of results and a heartbeat, as
an agent sends them and the collector validates them.

Strict types: a "yes" or "200" string is a client bug to report, not a value to guess.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

# "error": null when ok, else one of these (wire-protocol.md).
ERROR_REASONS = ("dns", "connect", "timeout", "tls", "status", "body", "icmp", "permission", "blocked", "internal")

# The most results one batch may carry (an agent's collector.batch_size is bounded by it).
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
