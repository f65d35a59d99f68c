"""Egress guard: where Waypoint may send data it was told to send (webhooks, Slack).

A destination a tenant configures must be a public address. Loopback, private, link-local
(cloud metadata at 169.254.169.254), carrier-grade NAT, multicast, unspecified, reserved and
documentation addresses are refused, also when written as a number (2130706433, 0x7f.1) or
wrapped in IPv6 (::ffff:127.0.0.1, 6to4, Teredo, NAT64), unless ``WAYPOINT_EGRESS_ALLOW``
names them: comma-separated CIDRs or host names, each optionally with ``:port``.

Checked twice: when the destination is configured (``check_url``: a literal address, or what the
name resolves to now), and at every connection (``guarded_client``): the name is resolved,
every address checked, and the connection made to the checked address itself, so a name that
resolves elsewhere by then (DNS rebinding) cannot reach an internal service. TLS still
verifies the certificate for the name (SNI and Host are the name's).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Named for the message; the general rules below refuse them anyway.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata",
    ipaddress.ip_address("192.0.0.192"): "cloud metadata",
}


class EgressRefused(httpcore.ConnectError):
    """A connection the guard refused (an ``httpcore`` connect error, so httpx reports it)."""


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback address" …); None: a public one."""
    inner = _embedded_v4(ip)
    if inner is not None:
        kind = address_kind(inner)
        return f"{kind} ({inner} inside IPv6)" if kind else None
    if ip in _METADATA:
        return f"{_METADATA[ip]} address"
    for kind, test in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return f"{kind} address"
    return None if ip.is_global else "non-public address"


def _refusal(what: str, kind: str) -> str:
    article = "an" if kind[0] in "aeiou" else "a"
    return (
        f"{what} is {article} {kind}; destinations must be public "
        "(an operator can allow it with WAYPOINT_EGRESS_ALLOW)"
    )


@dataclass(frozen=True)
class EgressPolicy:
    networks: tuple[tuple[IPNetwork, int | None], ...] = ()
    hosts: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, allow: str | Iterable[str]) -> EgressPolicy:
        """``WAYPOINT_EGRESS_ALLOW``: ``10.0.0.0/8, 127.0.0.1:8080, [::1]:9000, hooks.lan:443``."""
        entries = allow.replace(",", " ").split() if isinstance(allow, str) else list(allow)
        networks: list[tuple[IPNetwork, int | None]] = []
        hosts: list[tuple[str, int | None]] = []
        for entry in entries:
            host, port = _split_port(entry.strip())
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                hosts.append((_normal_host(host), port))
        return cls(tuple(networks), tuple(hosts))

    def names(self, host: str, port: int) -> bool:
        """The operator allowed this host name (at this port): trusted whatever it resolves to."""
        name = _normal_host(host)
        return any(h == name and p in (None, port) for h, p in self.hosts)

    def refusal(self, host: str, ip: IPAddress, port: int) -> str | None:
        """Why connecting to ``ip`` (``host`` resolved) at ``port`` is refused (None: allowed)."""
        if self.names(host, port):
            return None
        kind = address_kind(ip)
        if kind is None:
            return None
        if any(ip in net and p in (None, port) for net, p in self.networks):
            return None
        return _refusal(host if _literal(host) == ip else f"{host} ({ip})", kind)


@lru_cache(maxsize=16)
def policy_from(allow: str) -> EgressPolicy:
    return EgressPolicy.parse(allow)


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port or [v6]
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:  # v4:port or name:port (a bare v6 has several colons)
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normal_host(host).split("%", 1)[0])
    except ValueError:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def addresses(
    host: str, port: int, policy: EgressPolicy, resolve: Resolver
) -> list[IPAddress]:
    """Every address ``host`` resolves to, or ``EgressRefused`` naming the first refused one
    (a name that resolves to one public and one private address is refused: either may be
    used)."""
    literal = _literal(host)
    found = [literal] if literal is not None else [_ip(a) for a in await resolve(host, port)]
    for ip in found:
        reason = policy.refusal(host, ip, port)
        if reason is not None:
            raise EgressRefused(f"refused: {reason}")
    return found


def _ip(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])


async def check_url(
    url: str, policy: EgressPolicy, *, resolve: Resolver = system_resolve, timeout: float = 2.0
) -> str | None:
    """Why ``url`` is not an acceptable destination now (None: acceptable). A name that does not
    resolve yet is accepted: every delivery checks again."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "only http and https URLs with a host name or address"
    host = _normal_host(parts.hostname)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _literal(host) is None and (host == "localhost" or host.endswith(".localhost")):
        if not policy.names(host, port):
            return _refusal(host, "loopback name")
    try:
        await asyncio.wait_for(addresses(host, port, policy, resolve), timeout)
    except EgressRefused as refused:
        return str(refused).removeprefix("refused: ")
    except (OSError, TimeoutError):
        return None
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: EgressPolicy, resolve: Resolver = system_resolve):
        self.policy = policy
        self.resolve = resolve
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await asyncio.wait_for(
                addresses(host, port, self.policy, self.resolve), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        last: Exception | None = None
        for ip in found:  # the checked address itself: no second resolution to rebind
            try:
                return await self.inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002 - the interface's arguments
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Iterable[Any] | None = None,  # noqa: ARG002
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("refused: unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(
    policy: EgressPolicy,
    *,
    timeout: float,
    resolve: Resolver = system_resolve,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An httpx client whose every connection passes the egress guard. Environment proxies are
    ignored (a proxy would connect for us, unchecked), and redirects are not followed."""
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx's transport is a thin mapping onto an httpcore pool; this one connects through the
    # guard (tests/shared/test_egress.py fails if an httpx upgrade bypasses it).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(policy, resolve),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, trust_env=False, follow_redirects=False
    )


def refused(exc: BaseException) -> str | None:
    """The guard's reason if ``exc`` (an httpx error) is a refused connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EgressRefused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
