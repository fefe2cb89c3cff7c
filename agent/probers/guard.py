"""The SSRF guard: with `guard: {block_private: true}` in the agent config, HTTP checks never
open a connection to a private, loopback, link-local, multicast, reserved, unspecified or cloud
metadata address.

Where it is enforced: at connect time, on the address the socket is about to connect to.
`GuardedConnector` is an aiohttp TCPConnector whose `socket_factory` judges every
(family, address) it is asked for a socket, after name resolution and immediately before
`connect()`. So

* a name that resolves to a private address is refused, whatever the URL says;
* DNS rebinding cannot slip through: the address judged is the address connected to, there is no
  second lookup between the check and the connect;
* every redirect hop is judged again, since aiohttp opens each hop's connection through the same
  connector (and the prober's connector never reuses a connection: `force_close=True`);
* an IP literal in the URL (which aiohttp never sends to a resolver) is judged the same way.

A name with several addresses is tried on the allowed ones only; when every address it resolves
to is blocked, the probe fails with the reason `blocked` (wire-protocol.md), naming the addresses
and why each was refused.
"""
from __future__ import annotations

import errno
import inspect
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata services: always blocked while the guard is on, even inside `allow`.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
# The guard needs aiohttp's `socket_factory` hook (aiohttp 3.12 and later).
SUPPORTED = "socket_factory" in inspect.signature(aiohttp.TCPConnector.__init__).parameters

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_PREFIX = ipaddress.ip_network("64:ff9b:1::/48")


def why_blocked(address: str | IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why the guard refuses `address` ("loopback", "private", "metadata", ...), or None if it
    may be connected to. Addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are
    judged by the embedded address; `allow` lists networks the operator exempts (metadata
    addresses are never exempt); an address that does not parse is refused."""
    try:
        ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else (
            ipaddress.ip_address(str(address).split("%", 1)[0])  # drop an IPv6 scope id
        )
    except ValueError:
        return "not an IP address"
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = why_blocked(embedded, allow)
        return f"{reason} (embedded {embedded})" if reason else None
    if any(ip in net for net in allow):
        return None
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:  # shared address space (100.64.0.0/10), site-local, ...
        return "not globally routable"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX or ip in NAT64_LOCAL_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class AddressBlocked(OSError):
    """Raised instead of opening a socket to a blocked address (aiohttp reports it as a
    connection error; the prober recognises it through the connector's `blocked` list)."""

    def __init__(self, address: str, reason: str):
        super().__init__(errno.EACCES, f"{address} is blocked by the agent's guard ({reason})")
        self.address = address
        self.reason = reason


@dataclass(frozen=True)
class AddressGuard:
    """The guard's policy: `allow` holds networks exempted from the private-address rule."""

    allow: tuple[IPNetwork, ...] = ()

    def why_blocked(self, address: str | IPAddress) -> str | None:
        return why_blocked(address, self.allow)


@dataclass
class Hop:
    """One connection the connector was asked for (the first request, or one redirect):
    the addresses it refused, with why, and the ones it let a socket connect to."""

    host: str
    port: int | None
    blocked: list[tuple[str, str]] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that judges every address right before connecting to it (see module doc).

    `hops` records, per connection asked for, what was refused and what was allowed, so that a
    failed connection can be told apart as "blocked" (all its addresses refused) from "connect"."""

    def __init__(self, guard: AddressGuard, **kwargs):
        self.guard = guard
        self.hops: list[Hop] = []
        super().__init__(socket_factory=self._guarded_socket, **kwargs)

    async def connect(self, req, traces, timeout):
        self.hops.append(Hop(req.url.host or "", req.url.port))
        return await super().connect(req, traces, timeout)

    def _guarded_socket(self, addr_info) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        address = str(sockaddr[0])
        hop = self.hops[-1] if self.hops else Hop("", None)
        reason = self.guard.why_blocked(address)
        if reason is not None:
            hop.blocked.append((address, reason))
            raise AddressBlocked(address, reason)
        hop.allowed.append(address)
        return socket.socket(family=family, type=type_, proto=proto)

    def hop_blocked(self) -> bool:
        """True when the last connection asked for was refused on every address it tried."""
        return bool(self.hops) and bool(self.hops[-1].blocked) and not self.hops[-1].allowed

    def describe_hop(self) -> str:
        hop = self.hops[-1]
        reasons: dict[str, str] = {}
        for address, reason in hop.blocked:
            reasons.setdefault(address, reason)
        host = f"[{hop.host}]" if ":" in hop.host else hop.host
        where = f"{host}:{hop.port}" if hop.port else host
        redirect = f" (redirect {len(self.hops) - 1})" if len(self.hops) > 1 else ""
        listed = ", ".join(f"{a} ({r})" for a, r in reasons.items())
        return f"{where}{redirect} blocked by the agent's guard: {listed}"
