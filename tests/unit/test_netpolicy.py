"""The address policy shared by the agents' tools and the tenants' provider URLs:
every spelling of a non-public address is refused, public ones pass, the allow-list widens it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.netpolicy import AddressPolicy, EgressRefused, forbidden_reason, ip_literal

_INNER_NETS = [ipaddress.ip_network(n) for n in
               ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                "100.64.0.0/10", "0.0.0.0/8")]


@st.composite
def inner_ipv4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    net = draw(st.sampled_from(_INNER_NETS))
    return net[draw(st.integers(0, net.num_addresses - 1))]


def spellings(ip: ipaddress.IPv4Address) -> list[str]:
    """Every way a URL host can name ``ip`` (what the C resolver and aiohttp accept)."""
    n = int(ip)
    a, b, c, d = ip.packed
    return [str(ip), str(n), hex(n), f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
            f"[::ffff:{ip}]", f"::ffff:{ip}", f"[2002:{a:02x}{b:02x}:{c:02x}{d:02x}::1]",
            f"0{a:o}.{b}.{c}.{d}" if a else str(ip)]


@settings(max_examples=300, deadline=None)
@given(inner_ipv4())
async def test_every_spelling_of_an_inner_address_is_refused(ip: ipaddress.IPv4Address) -> None:
    policy = AddressPolicy()
    for host in spellings(ip):
        literal = ip_literal(host)
        assert literal is not None, host
        assert forbidden_reason(literal) is not None, host
        with pytest.raises(EgressRefused, match="WARDEN_EGRESS_ALLOW"):
            await policy.resolve(host.strip("[]"), 80)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
async def test_a_spelling_is_judged_as_the_address_it_means(ip: ipaddress.IPv4Address) -> None:
    """Whatever the form, the verdict is the dotted address's verdict: no form is a way around it."""
    verdict = forbidden_reason(ip) is None
    for host in spellings(ip)[:5]:
        assert ip_literal(host) == ip
        assert (forbidden_reason(ip_literal(host)) is None) == verdict  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(inner_ipv4())
async def test_an_allowed_network_admits_its_addresses_in_every_form(ip: ipaddress.IPv4Address) -> None:
    policy = AddressPolicy.from_entries([f"{ip}/32"])
    for host in spellings(ip)[:7]:
        assert await policy.resolve(host.strip("[]"), 80)
    neighbour = ipaddress.IPv4Address(int(ip) ^ 1)
    if forbidden_reason(neighbour) is not None:
        with pytest.raises(EgressRefused):
            await policy.resolve(str(neighbour), 80)


@pytest.mark.parametrize("host", ["example.com", "1e100", "cafe.de", "123.example.com", "1.2.3.4a", ""])
def test_names_are_not_literals(host: str) -> None:
    assert ip_literal(host) is None


async def test_allowed_name_passes_whatever_it_resolves_to() -> None:
    assert await AddressPolicy.from_entries(["LocalHost."]).resolve("localhost", 80)
    with pytest.raises(EgressRefused, match="localhost resolves to"):
        await AddressPolicy().resolve("localhost", 80)
