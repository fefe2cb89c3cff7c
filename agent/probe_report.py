"""`uptime-agent probe`: run checks once, now, and show everything their results hold, the way
blackbox_exporter's `/probe?debug=true` does, so that an operator can debug a check before
deploying it.

`render_json` gives an array, one object per check: check, type, ok, error (null when ok), detail,
latency_ms, degraded, status_code, phases (seconds by phase name), and for the types that have
them final_url and redirects (HTTP), cert_not_after, cert_days_left, cert_subject, cert_issuer and
cert_verified (TLS), rcode and answers (DNS), steps and failed_step (journeys; each step with
name, ok, error, detail, status_code, latency_ms and phases).
"""
from __future__ import annotations

import json
from typing import Any

from agent.probers import ProbeResult, prepare, run_probe
from agent.probers.guard import AddressGuard
from protocol.checks import Check


async def run_checks(checks: list[Check], *, agent_id: str, guard: AddressGuard | None) -> list[ProbeResult]:
    """Every check probed once, one after the other (each within its own timeout), so that no
    probe's timings include another's work in the same event loop."""
    prepare(checks)
    return [await run_probe(check, agent_id=agent_id, guard=guard) for check in checks]


def as_json(check: Check, outcome: ProbeResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "check": check.name, "type": check.type, "ok": outcome.ok, "error": outcome.error,
        "detail": outcome.detail, "latency_ms": outcome.latency_ms, "degraded": bool(outcome.degraded),
        "status_code": outcome.status_code, "phases": dict(outcome.phases or {}),
    }
    if check.type == "http":
        out.update(final_url=outcome.final_url, redirects=outcome.redirects)
    if check.type in ("http", "tcp") or outcome.cert is not None:
        cert = outcome.cert.to_dict() if outcome.cert is not None else None
        out.update(
            cert_not_after=cert["not_after"] if cert else None,
            cert_days_left=cert["days_left"] if cert else None,
            cert_subject=cert["subject"] if cert else None,
            cert_issuer=cert["issuer"] if cert else None,
            cert_verified=cert["verified"] if cert else None,
        )
    if check.type == "dns":
        out.update(rcode=outcome.rcode, answers=list(outcome.answers) if outcome.answers is not None else None)
    if check.type == "journey":
        out.update(steps=[step.to_dict() for step in outcome.steps or ()], failed_step=outcome.failed_step)
    return out


def render_json(checks: list[Check], outcomes: list[ProbeResult]) -> str:
    return json.dumps([as_json(check, outcome) for check, outcome in zip(checks, outcomes)], indent=2)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _phases(phases) -> str:
    return ", ".join(f"{name} {_ms(value)}" for name, value in phases.items())


def render_text(checks: list[Check], outcomes: list[ProbeResult]) -> str:
    lines: list[str] = []
    width = max((len(check.name) for check in checks), default=4)
    for check, outcome in zip(checks, outcomes):
        verdict = "ok" if outcome.ok else f"FAIL {outcome.error}"
        if outcome.ok and outcome.degraded:
            verdict = "ok (degraded)"
        latency = f"{outcome.latency_ms:.1f} ms" if outcome.latency_ms is not None else "-"
        status = f"  status {outcome.status_code}" if outcome.status_code is not None else ""
        lines.append(f"{check.name:<{width}}  {check.type:<7}  {verdict:<18}  {latency}{status}")
        if outcome.detail:
            lines.append(f"  detail     {outcome.detail}")
        if outcome.phases:
            lines.append(f"  phases     {_phases(outcome.phases)}")
        if outcome.final_url is not None:
            lines.append(f"  final url  {outcome.final_url} ({outcome.redirects or 0} redirects)")
        if outcome.cert is not None:
            cert = outcome.cert
            checked = "chain and host name verified" if cert.verified else "not verified (tls_verify: false, or refused)"
            lines.append(f"  cert       {cert.subject!r} issued by {cert.issuer!r}; earliest expiry "
                         f"{cert.to_dict()['not_after']} ({cert.days_left():.1f} days left); {checked}")
        if outcome.rcode is not None:
            lines.append(f"  rcode      {outcome.rcode}")
            lines.append(f"  answers    {', '.join(outcome.answers) if outcome.answers else '(none)'}")
        for index, step in enumerate(outcome.steps or (), 1):
            mark = "ok" if step.ok else f"FAIL {step.error}"
            took = f"{step.latency_ms:.1f} ms" if step.latency_ms is not None else "-"
            code = f"  status {step.status_code}" if step.status_code is not None else ""
            lines.append(f"  step {index:<2}    {step.name}: {mark}  {took}{code}")
            if step.detail:
                lines.append(f"             {step.detail}")
            if step.phases:
                lines.append(f"             {_phases(step.phases)}")
        if check.type == "journey" and outcome.steps is not None and len(outcome.steps) < len(check.steps):
            skipped = [step.name for step in check.steps[len(outcome.steps):]]
            lines.append(f"  not run    {', '.join(skipped)}")
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    lines.append(f"{len(outcomes) - failed} ok, {failed} failed")
    return "\n".join(lines)
