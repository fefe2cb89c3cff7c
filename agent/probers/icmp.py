"""ICMP echo prober (icmplib's async API): success when at least one of `count` echoes is answered.

Raw (privileged) sockets are tried first; without CAP_NET_RAW the kernel's unprivileged ICMP
("ping") sockets are the fallback; with neither the result is `permission` and says how to fix it.
"""
from __future__ import annotations

import asyncio
import logging

from icmplib import async_ping
from icmplib.exceptions import ICMPLibError, NameLookupError, SocketPermissionError
from icmplib.sockets import ICMPv4Socket

from protocol.checks import IcmpCheck
from agent.probers.guard import AddressGuard
from agent.probers.result import ProbeResult

log = logging.getLogger(__name__)

PERMISSION_HELP = (
    "cannot open an ICMP socket: run the agent as root or grant it CAP_NET_RAW "
    "(setcap cap_net_raw+ep $(readlink -f $(which python3))), or allow unprivileged ICMP "
    "(sysctl -w net.ipv4.ping_group_range=\"0 2147483647\")"
)
# Past the pings' own worst case ((count - 1) x interval + count x timeout), margin for name
# resolution and scheduling, after which the probe is cut off as a timeout.
OVERALL_MARGIN_SECONDS = 1.0


def socket_mode() -> str | None:
    """"privileged", "unprivileged", or None when this process can open no ICMP socket."""
    for privileged in (True, False):
        try:
            ICMPv4Socket(privileged=privileged).close()
        except SocketPermissionError:
            continue
        except ICMPLibError:  # anything else is not about permission: let a probe report it
            return "privileged" if privileged else "unprivileged"
        return "privileged" if privileged else "unprivileged"
    return None


def permission_problem() -> str | None:
    """The operator-facing explanation when ICMP probes cannot work at all, else None."""
    return PERMISSION_HELP if socket_mode() is None else None


async def probe(check: IcmpCheck, *, agent_id: str | None = None, guard: AddressGuard | None = None) -> ProbeResult:
    """1. ping with raw sockets; 2. on a permission error, with unprivileged ones; 3. judge.
    `guard` is accepted for the probers' one signature and ignored: the SSRF guard concerns the
    checks that open connections (agent/config.py GuardSection: ICMP is not affected)."""
    budget = check.worst_case_seconds() + OVERALL_MARGIN_SECONDS
    try:
        for privileged in (True, False):
            try:
                host = await asyncio.wait_for(
                    async_ping(
                        check.host,
                        count=check.count,
                        interval=check.ping_interval,
                        timeout=check.timeout,
                        privileged=privileged,
                    ),
                    budget,
                )
                break
            except SocketPermissionError:
                continue
        else:
            return ProbeResult.failure("permission", PERMISSION_HELP)
    except asyncio.TimeoutError:
        return ProbeResult.failure("timeout", f"ping of {check.host} did not finish within {budget:g}s")
    except NameLookupError as exc:
        return ProbeResult.failure("dns", f"cannot resolve {check.host!r}: {exc}")
    except (ICMPLibError, OSError) as exc:
        return ProbeResult.failure("icmp", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug here, not a down target
        log.exception("icmp probe of %s (%s) failed unexpectedly", check.name, check.host)
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")

    replies = f"{host.packets_received}/{host.packets_sent} replies from {host.address}"
    if not host.is_alive:
        return ProbeResult.failure("icmp", f"{replies} within {check.timeout:g}s each")
    return ProbeResult.success(
        host.avg_rtt,
        detail=f"{replies}, rtt min/avg/max {host.min_rtt:.3f}/{host.avg_rtt:.3f}/{host.max_rtt:.3f} ms",
        echo_rtts_ms=tuple(host.rtts),
    )
