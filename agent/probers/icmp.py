"""ICMP echo prober: success when at least one of `count` echoes is answered.

Raw (privileged) sockets are tried first; without CAP_NET_RAW the kernel's unprivileged ICMP
("ping") sockets are the fallback; with neither the result is `permission` and says how to fix it.
"""
from __future__ import annotations

import asyncio
import logging

from icmplib import async_resolve, is_hostname
from icmplib.exceptions import ICMPLibError, NameLookupError, SocketPermissionError
from icmplib.sockets import ICMPv4Socket

from protocol.checks import IcmpCheck
from agent.probers import echo
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
    """1. resolve the host (icmplib); 2. `count` echo requests through the agent's shared ICMP
    socket (agent/probers/echo.py), `ping_interval` apart, each waiting `timeout` for its reply;
    3. judge: up when at least one reply came. `guard` is accepted for the probers' one signature
    and ignored: the SSRF guard concerns the checks that open connections (agent/config.py
    GuardSection: ICMP is not affected)."""
    budget = check.worst_case_seconds() + OVERALL_MARGIN_SECONDS
    try:
        return await asyncio.wait_for(_ping(check), budget)
    except asyncio.TimeoutError:
        return ProbeResult.failure("timeout", f"ping of {check.host} did not finish within {budget:g}s")
    except NameLookupError as exc:
        return ProbeResult.failure("dns", f"cannot resolve {check.host!r}: {exc}")
    except echo.EchoPermissionError:
        return ProbeResult.failure("permission", PERMISSION_HELP)
    except (ICMPLibError, OSError) as exc:
        return ProbeResult.failure("icmp", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug here, not a down target
        log.exception("icmp probe of %s (%s) failed unexpectedly", check.name, check.host)
        return ProbeResult.failure("internal", f"{type(exc).__name__}: {exc}")


async def _ping(check: IcmpCheck) -> ProbeResult:
    address = check.host if not is_hostname(check.host) else (await async_resolve(check.host))[0]
    shared = echo.sockets()
    rtts: list[float] = []
    for i in range(check.count):
        if i:
            await asyncio.sleep(check.ping_interval)
        rtt = await shared.echo(address, check.timeout)
        if rtt is not None:
            rtts.append(rtt * 1000)
    replies = f"{len(rtts)}/{check.count} replies from {address}"
    if not rtts:
        return ProbeResult.failure("icmp", f"{replies} within {check.timeout:g}s each")
    average = sum(rtts) / len(rtts)
    return ProbeResult.success(
        average,
        detail=f"{replies}, rtt min/avg/max {min(rtts):.3f}/{average:.3f}/{max(rtts):.3f} ms",
        echo_rtts_ms=tuple(rtts),
    )
