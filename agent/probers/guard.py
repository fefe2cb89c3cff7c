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
* an IP literal in the URL (which aiohttp never sends to a resolver) is judged the same way;
* a legacy numeric IPv4 host (`2130706433`, `0177.0.0.1`, `0x7f000001`, `127.1`: forms that
  `inet_aton` and most resolvers map onto an address) is judged up front by the address it
  denotes, so it is refused as `blocked` whether or not aiohttp would have resolved it.

The classification does not lean on the `ipaddress` module's `is_private`/`is_global` alone
(their tables changed between Python releases): `BLOCKED_NETWORKS` lists every special-purpose
range the guard refuses, and the stdlib flags are a backstop for anything it misses.

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

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: always a /96, v4 in the last 32 bits
# RFC 8215 local-use 64:ff9b:1::/48: the network picks the prefix length, so where the IPv4 sits
# is known only for the /96 layout; the rest of the /48 falls under ::/8 (reserved) below.
NAT64_LOCAL_96 = ipaddress.ip_network("64:ff9b:1::/96")

# Special-purpose ranges (IANA registries) the guard refuses, most specific first where they
# overlap. Checked after the stdlib flags (which name most of them, and whose wording the
# reasons keep), so these decide only what a given Python's `ipaddress` tables leave out.
BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        # IPv4
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space"),  # carrier-grade NAT, RFC 6598
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),  # all of it, incl. the .9/.10 anycasts
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),  # deprecated, RFC 7526
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        # IPv6
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),  # IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, ...
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),  # Teredo 2001::/32, ORCHID, ...
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),  # deprecated (RFC 3879) but still routed on some networks
        ("ff00::/8", "multicast"),
    )
)


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
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))  # a scoped address compares unequal to the bare one
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
    for net, reason in BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return reason
    if not ip.is_global:
        return "not globally routable"
    return None


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a non-canonical numeric host denotes (`2130706433`, `0177.0.0.1`,
    `0x7f000001`, `127.1`), as inet_aton and most resolvers read it; None for a canonical
    dotted quad, an IPv6 literal or a name."""
    if not host or ":" in host or not all(c.isascii() and (c.isalnum() or c == ".") for c in host):
        return None
    try:
        ipaddress.IPv4Address(host)
        return None  # canonical: judged at connect time like any address
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX or ip in NAT64_LOCAL_96:
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
        hop = Hop(req.url.host or "", req.url.port)
        self.hops.append(hop)
        legacy = legacy_ipv4(hop.host)
        if legacy is not None:
            # Judged here, by the address it denotes: aiohttp may refuse such a host itself (as an
            # invalid URL, not as the guard's refusal) or hand it to a resolver that maps it.
            reason = self.guard.why_blocked(legacy)
            if reason is not None:
                hop.blocked.append((str(legacy), reason))
                raise aiohttp.ClientConnectorError(req.connection_key, AddressBlocked(str(legacy), reason))
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
