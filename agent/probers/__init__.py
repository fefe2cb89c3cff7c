"""One module per probe type, one signature (`async def probe(check, *, agent_id) -> ProbeResult`),
one table.

The table maps a check's `type:` to its prober, as blackbox_exporter's prober map does.
"""
from agent.probers import http, icmp
from agent.probers.result import ERRORS, ProbeResult

PROBERS = {"http": http.probe, "icmp": icmp.probe}

# Every reason a probe of each type can end with, so metric series exist before they happen.
RESULTS_BY_TYPE = {
    "http": ("ok", "dns", "connect", "timeout", "tls", "status", "body", "blocked", "internal"),
    "icmp": ("ok", "dns", "timeout", "icmp", "permission", "internal"),
}

__all__ = ["ERRORS", "PROBERS", "RESULTS_BY_TYPE", "ProbeResult"]
