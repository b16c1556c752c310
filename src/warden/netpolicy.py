"""The address policy: where Warden may connect on behalf of someone it does not fully trust.

One policy, two users: the agents' HTTP and MCP tools (``agents/tools/egress.py``,
whose requests a model writes) and the provider transport for every workspace
but the operator's ``default`` (``gateway/providers/http.py``, where a tenant
admin chooses ``base_url``). Pure code over the standard library, so the
gateway may import it.

- *Every* address a host resolves to must be public: loopback, private,
  link-local, multicast, reserved, unspecified and shared (CGNAT) addresses are
  refused, also when wrapped in an IPv6 form (IPv4-mapped ``::ffff:a.b.c.d``,
  6to4 ``2002::/16``, Teredo);
- a host written as a number is judged as the address it means, in every form
  ``inet_aton`` accepts (``2130706433``, ``0x7f000001``, ``127.1``), without DNS;
- the operator may allow host names or CIDRs (``WARDEN_EGRESS_ALLOW``); an
  allowed name passes whatever it resolves to, an allowed network passes the
  addresses inside it (mapped and embedded forms included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NUMERIC_HOST = frozenset("0123456789abcdefxABCDEFX.")


class EgressError(Exception):
    """A connection that did not happen or did not finish; the message is safe to show."""


class EgressRefused(EgressError):
    """The policy forbids the destination."""


def embedded_ipv4(ip: IPAddress) -> Iterator[IPAddress]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo server/client)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            yield ip.ipv4_mapped
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip.teredo is not None:
            yield from ip.teredo


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is the IPv4 host itself: judge that one alone.
        reason = forbidden_reason(ip.ipv4_mapped)
        return f"{reason} (embedded in {ip})" if reason else None
    for inner in embedded_ipv4(ip):
        reason = forbidden_reason(inner)
        if reason is not None:
            return f"{reason} (embedded in {ip})"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("non-public", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as a number means (brackets, scope id and legacy IPv4 forms too)."""
    host = host.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host) <= _NUMERIC_HOST and host[0].isdigit():
        try:  # what the C resolver makes of "2130706433", "0x7f000001" or "127.1"
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str], **extra: Any) -> Self:
        """Build from ``WARDEN_EGRESS_ALLOW`` entries: host names, IPs or CIDRs."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(normal_host(entry))
        return cls(allow_hosts=frozenset(hosts), allow_networks=tuple(networks), **extra)

    def _network_allows(self, ip: IPAddress) -> bool:
        candidates = [ip, *embedded_ipv4(ip)]
        return any(c.version == net.version and c in net for c in candidates for net in self.allow_networks)

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise :class:`EgressRefused` unless every one of ``addresses`` (of ``host``) may be reached."""
        if normal_host(host) in self.allow_hosts:
            return
        for ip in addresses:
            reason = forbidden_reason(ip)
            if reason is not None and not self._network_allows(ip):
                raise EgressRefused(
                    f"refused: {host} resolves to {ip}, a {reason} address; "
                    "the operator may allow it with WARDEN_EGRESS_ALLOW"
                )

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host`` (in resolver order), after checking them all."""
        literal = ip_literal(host)
        if literal is not None:
            self.check(host, [literal])
            return [str(literal)]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise EgressError(f"cannot resolve host {host!r}: {exc}") from None
        addresses: list[IPAddress] = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope id
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise EgressError(f"cannot resolve host {host!r}")
        self.check(host, addresses)
        return [str(ip) for ip in addresses]
