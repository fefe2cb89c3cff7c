"""One module per probe type, one signature
(`async def probe(check, *, agent_id=None, guard=None) -> ProbeResult`), one table.

The table maps a check's `type:` to its prober, as blackbox_exporter's prober map does.
`run_probe` is how the agent and `uptime-agent probe` call it: the prober, a bug in it turned into
an `internal` result, and the check's `degraded_after` applied.
"""
from __future__ import annotations

import dataclasses
import logging
import traceback

from agent.probers import dns, http, http_lean, icmp, journey, tcp, tls
from agent.probers.guard import AddressGuard
from agent.probers.result import ERRORS, CertInfo, ProbeResult, StepResult
from protocol.checks import Check
from protocol.durations import format_duration
from protocol.redact import redact_text, secret_values

log = logging.getLogger(__name__)

# The clients an `http` check can be probed with (the agent's `agent.http_client`): the same probe,
# results and reasons; the lean one costs a third to a half of aiohttp's CPU per plain HTTP probe
# (bench/http_lean.py), which is what decides how many probes one agent core sustains.
HTTP_CLIENTS = {"lean": http_lean.probe, "aiohttp": http.probe}
DEFAULT_HTTP_CLIENT = "lean"

PROBERS = {"http": HTTP_CLIENTS[DEFAULT_HTTP_CLIENT], "icmp": icmp.probe, "tcp": tcp.probe, "dns": dns.probe,
           "journey": journey.probe}

# Every reason a probe of each type can end with, so metric series exist before they happen.
RESULTS_BY_TYPE = {
    "http": ("ok", "dns", "connect", "timeout", "tls", "cert_expiry", "status", "body", "blocked", "internal"),
    "icmp": ("ok", "dns", "timeout", "icmp", "permission", "internal"),
    "tcp": ("ok", "dns", "connect", "timeout", "tls", "cert_expiry", "expect", "blocked", "internal"),
    "dns": ("ok", "dns", "connect", "timeout", "rcode", "answer", "blocked", "internal"),
    "journey": ("ok", "dns", "connect", "timeout", "tls", "status", "body", "assertion", "blocked", "internal"),
}

# The phases each type's results carry (wire-protocol.md), exported every time (agent/metrics.py).
PHASES_BY_TYPE = {
    "http": http.PHASES,
    "tcp": tcp.PHASES,
    "dns": ("lookup",),
    "icmp": (),
    "journey": (),
}


async def run_probe(check: Check, *, agent_id: str | None = None, guard: AddressGuard | None = None,
                    http_client: str | None = None) -> ProbeResult:
    """Probe `check` once: 1. its prober (with the SSRF guard for the types that connect to a
    target the check names; ICMP is not affected; `http_client` picks the client of an `http`
    check from HTTP_CLIENTS, the table's by default); 2. an exception, which is a bug, becomes an
    `internal` result, logged redacted; 3. `degraded` from the check's `degraded_after`."""
    prober = HTTP_CLIENTS[http_client] if http_client is not None and check.type == "http" else PROBERS[check.type]
    try:
        outcome = await prober(check, agent_id=agent_id, guard=guard)
    except Exception as exc:  # probers return failures; an exception is a bug
        # redacted: the exception's text may quote the check's URL or headers (protocol/redact.py)
        secrets = secret_values(check.model_dump(by_alias=True))
        log.error("probe of %s raised:\n%s", check.name,
                  redact_text("".join(traceback.format_exception(exc)), secrets).rstrip())
        outcome = ProbeResult.failure("internal", redact_text(f"{type(exc).__name__}: {exc}", secrets))
    return judge_degraded(check, outcome)


def prepare(checks) -> None:
    """Build now what the checks' first probes would otherwise build while timed: the TLS client
    contexts (loading the system's CAs takes tens of milliseconds, during which the event loop,
    and every probe running in it, waits)."""
    for check in checks:
        if check.type in ("http", "tcp", "journey") and (check.type != "tcp" or check.uses_tls):
            try:
                tls.client_context(check.tls_verify, check.tls_ca_file)
            except tls.CaFileError:
                pass  # the probe reports it


def judge_degraded(check: Check, outcome: ProbeResult) -> ProbeResult:
    """A result slower than the check's `degraded_after` is ok but degraded (Numezis SaaS SLA §1:
    not meeting "the defined operating criteria"); without a threshold `degraded` stays unset."""
    limit = check.degraded_after
    if limit is None:
        return outcome
    slow = outcome.ok and outcome.latency_ms is not None and outcome.latency_ms > limit * 1000
    detail = outcome.detail
    if slow:
        note = f"degraded: {outcome.latency_ms:.0f} ms, slower than degraded_after {format_duration(limit)}"
        detail = f"{note}; {detail}" if detail else note
    return dataclasses.replace(outcome, degraded=slow, detail=detail)


__all__ = ["DEFAULT_HTTP_CLIENT", "ERRORS", "HTTP_CLIENTS", "PHASES_BY_TYPE", "PROBERS", "RESULTS_BY_TYPE", "CertInfo",
           "ProbeResult", "StepResult", "judge_degraded", "prepare", "run_probe"]
