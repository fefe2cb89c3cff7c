"""What a prober returns: a down target is a result with a reason, never an exception.

Besides the five fields every result has (ok, latency_ms, status_code, error, detail), a result
carries what its probe type can tell (wire-protocol.md, "Details"): phase times, the final URL
and redirect count, the presented certificate's expiry, a DNS response's code and answers, a
journey's steps. `to_wire()` gives the fields the collector receives; `to_dict()` the same with
what only the agent's own tools show (certificate subject, per-step phases, ICMP echo times).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from protocol.redact import redact_url
from protocol.timestamps import rfc3339, utcnow
from protocol.wire import ERROR_REASONS, MAX_ANSWERS, MAX_PHASES, MAX_STEPS

# wire-protocol.md: "error": null when ok; one of these otherwise. `blocked`: the agent's SSRF
# guard refused every address of a check's target or redirect (agent/probers/guard.py).
ERRORS = ERROR_REASONS
DETAIL_MAX_CHARS = 500  # wire-protocol.md: detail is short human text, <= 500 chars
FINAL_URL_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 500
STEP_NAME_MAX_CHARS = 128


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The certificate chain a TLS server presented."""

    not_after: datetime  # the earliest expiry in the presented chain (what blackbox_exporter exports)
    leaf_not_after: datetime
    subject: str  # the leaf's subject common name, or its first DNS name
    issuer: str
    verified: bool  # chain and host name were verified in the handshake (tls_verify: true)

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or utcnow())).total_seconds() / 86400

    def to_dict(self) -> dict[str, Any]:
        return {"not_after": rfc3339(self.not_after), "leaf_not_after": rfc3339(self.leaf_not_after),
                "subject": self.subject, "issuer": self.issuer, "verified": self.verified,
                "days_left": round(self.days_left(), 3)}


@dataclass(frozen=True, slots=True)
class StepResult:
    """One journey step as it ran (wire-protocol.md: steps[])."""

    name: str
    ok: bool
    error: str | None = None
    detail: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    phases: Mapping[str, float] | None = None  # the step's HTTP phases: shown by `uptime-agent probe`, not shipped

    def __post_init__(self) -> None:
        if self.ok != (self.error is None):
            raise ValueError(f"step {self.name!r}: ok={self.ok} contradicts error={self.error!r}")
        if self.error is not None and self.error not in ERRORS:
            raise ValueError(f"unknown error reason {self.error!r}")
        object.__setattr__(self, "name", _clip(self.name, STEP_NAME_MAX_CHARS))
        if self.detail is not None:
            object.__setattr__(self, "detail", _clip(self.detail, DETAIL_MAX_CHARS))
        if self.latency_ms is not None:
            object.__setattr__(self, "latency_ms", round(self.latency_ms, 3))

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "error": self.error, "detail": self.detail,
                "status_code": self.status_code, "latency_ms": self.latency_ms}

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_wire(), "phases": dict(self.phases) if self.phases is not None else None}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None = None  # None when there is nothing to measure
    status_code: int | None = None  # HTTP and journeys only
    error: str | None = None  # None when ok, else one of ERRORS
    detail: str | None = None
    # --- details: None where the probe type has none, or the probe got nowhere near them ---
    degraded: bool | None = None  # set from the check's degraded_after (agent/probers/__init__.py)
    phases: Mapping[str, float] | None = None  # seconds by phase name
    final_url: str | None = None  # HTTP: the URL of the last response (redacted)
    redirects: int | None = None
    cert: CertInfo | None = None
    rcode: str | None = None
    answers: tuple[str, ...] | None = None
    steps: tuple[StepResult, ...] | None = None
    failed_step: str | None = None
    echo_rtts_ms: tuple[float, ...] | None = None  # ICMP: each answered echo (metrics only, not shipped)

    def __post_init__(self) -> None:
        if self.ok != (self.error is None):
            raise ValueError(f"ok={self.ok} contradicts error={self.error!r}")
        if self.error is not None and self.error not in ERRORS:
            raise ValueError(f"unknown error reason {self.error!r}")
        if self.detail is not None and len(self.detail) > DETAIL_MAX_CHARS:
            object.__setattr__(self, "detail", _clip(self.detail, DETAIL_MAX_CHARS))
        if self.latency_ms is not None:
            object.__setattr__(self, "latency_ms", round(self.latency_ms, 3))
        if self.phases is not None:
            if len(self.phases) > MAX_PHASES:
                raise ValueError(f"{len(self.phases)} phases, at most {MAX_PHASES}")
            object.__setattr__(self, "phases", {k: round(max(0.0, v), 6) for k, v in self.phases.items()})
        if self.final_url is not None:
            object.__setattr__(self, "final_url", _clip(redact_url(self.final_url), FINAL_URL_MAX_CHARS))
        if self.answers is not None:
            object.__setattr__(self, "answers",
                               tuple(_clip(a, ANSWER_MAX_CHARS) for a in list(self.answers)[:MAX_ANSWERS]))
        if self.steps is not None:
            if len(self.steps) > MAX_STEPS:
                raise ValueError(f"{len(self.steps)} steps, at most {MAX_STEPS}")
            object.__setattr__(self, "steps", tuple(self.steps))
        if self.failed_step is not None:
            object.__setattr__(self, "failed_step", _clip(self.failed_step, STEP_NAME_MAX_CHARS))

    @classmethod
    def success(cls, latency_ms: float | None, *, status_code: int | None = None, detail: str | None = None,
                **details: Any) -> ProbeResult:
        return cls(True, latency_ms, status_code, None, detail, **details)

    @classmethod
    def failure(
        cls,
        error: str,
        detail: str,
        *,
        latency_ms: float | None = None,
        status_code: int | None = None,
        **details: Any,
    ) -> ProbeResult:
        return cls(False, latency_ms, status_code, error, detail, **details)

    def to_wire(self) -> dict[str, Any]:
        """The result's fields as POST /api/v1/results carries them; details only where present."""
        wire: dict[str, Any] = {"ok": self.ok, "latency_ms": self.latency_ms, "status_code": self.status_code,
                                "error": self.error, "detail": self.detail}
        if self.degraded is not None:
            wire["degraded"] = self.degraded
        if self.phases is not None:
            wire["phases"] = dict(self.phases)
        if self.final_url is not None:
            wire["final_url"] = self.final_url
        if self.redirects is not None:
            wire["redirects"] = self.redirects
        if self.cert is not None:
            wire["cert_not_after"] = rfc3339(self.cert.not_after)
        if self.rcode is not None:
            wire["rcode"] = self.rcode
        if self.answers is not None:
            wire["answers"] = list(self.answers)
        if self.steps is not None:
            wire["steps"] = [step.to_wire() for step in self.steps]
        if self.failed_step is not None:
            wire["failed_step"] = self.failed_step
        return wire

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (what `uptime-agent probe --format json` builds on)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "cert":
                value = value.to_dict() if value is not None else None
            elif f.name == "steps":
                value = [step.to_dict() for step in value] if value is not None else None
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out
