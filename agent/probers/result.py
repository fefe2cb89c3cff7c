"""What a prober returns: a down target is a result with a reason, never an exception."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from protocol.wire import ERROR_REASONS

# wire-protocol.md: "error": null when ok; one of these otherwise. `blocked`: the agent's SSRF
# guard refused every address of an HTTP check's target or redirect (agent/probers/guard.py).
ERRORS = ERROR_REASONS
DETAIL_MAX_CHARS = 500  # wire-protocol.md: detail is short human text, <= 500 chars


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None = None  # None when there is nothing to measure
    status_code: int | None = None  # HTTP only
    error: str | None = None  # None when ok, else one of ERRORS
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.ok != (self.error is None):
            raise ValueError(f"ok={self.ok} contradicts error={self.error!r}")
        if self.error is not None and self.error not in ERRORS:
            raise ValueError(f"unknown error reason {self.error!r}")
        if self.detail is not None and len(self.detail) > DETAIL_MAX_CHARS:
            object.__setattr__(self, "detail", self.detail[: DETAIL_MAX_CHARS - 3] + "...")
        if self.latency_ms is not None:
            object.__setattr__(self, "latency_ms", round(self.latency_ms, 3))

    @classmethod
    def success(cls, latency_ms: float | None, *, status_code: int | None = None, detail: str | None = None) -> ProbeResult:
        return cls(True, latency_ms, status_code, None, detail)

    @classmethod
    def failure(
        cls,
        error: str,
        detail: str,
        *,
        latency_ms: float | None = None,
        status_code: int | None = None,
    ) -> ProbeResult:
        return cls(False, latency_ms, status_code, error, detail)

    def to_dict(self) -> dict:
        return asdict(self)
