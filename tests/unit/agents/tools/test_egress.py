"""Egress policy: address classes refused, operator allow-list, redirects re-checked,
size and time limits, and the IP pin keeping Host and TLS on the original name."""

from __future__ import annotations

import ipaddress

import orjson
import pytest

from warden.agents.tools.egress import EgressError, EgressPolicy, EgressRefused, forbidden_reason


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
    ("::ffff:10.0.0.1", "private (embedded in ::ffff:a00:1)"),
    ("2002:7f00:1::1", "loopback (embedded in 2002:7f00:1::1)"),
])
def test_non_public_addresses_are_named(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254",
                                  "10.0.0.5", "0.0.0.0", "localhost"])
async def test_resolve_refuses_non_public_destinations(host: str) -> None:
    with pytest.raises(EgressRefused, match="WARDEN_EGRESS_ALLOW"):
        await EgressPolicy().resolve(host, 80)


async def test_allow_list_by_cidr_and_by_name() -> None:
    policy = EgressPolicy.from_entries(["10.0.0.0/8", "LocalHost.", "::1"])
    assert await policy.resolve("10.9.8.7", 80) == ["10.9.8.7"]
    assert await policy.resolve("::ffff:10.0.0.1", 80) == ["::ffff:a00:1"]  # mapped form of an allowed net
    assert await policy.resolve("localhost", 80) == ["127.0.0.1"]
    assert await policy.resolve("::1", 80) == ["::1"]
    with pytest.raises(EgressRefused, match="127.0.0.2, a loopback address"):
        await policy.resolve("127.0.0.2", 80)
    with pytest.raises(EgressRefused, match="private"):
        await policy.resolve("192.168.0.1", 80)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(EgressRefused, match="only http and https"):
        await EgressPolicy().fetch("GET", url)


async def test_malformed_urls_are_errors() -> None:
    with pytest.raises(EgressError, match="invalid URL"):
        await EgressPolicy().fetch("GET", "http://")
    with pytest.raises(EgressError, match="invalid URL"):
        await EgressPolicy().fetch("GET", "http://[zz::1]/")


async def test_loopback_refused_by_default(loopback) -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        await EgressPolicy().fetch("GET", f"http://127.0.0.1:{loopback.port}/echo")


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]"])
async def test_numeric_spellings_of_loopback_are_refused(loopback, host: str) -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        await EgressPolicy().fetch("GET", f"http://{host}:{loopback.port}/echo")


async def test_a_numeric_spelling_is_pinned_to_the_address_it_means(loopback) -> None:
    """Allowed by network, ``127.1`` connects to 127.0.0.1 (the policy's reading, not the OS's)."""
    result = await EgressPolicy.from_entries(["127.0.0.0/8"]).fetch("GET", f"http://127.1:{loopback.port}/echo")
    assert result.status == 200 and orjson.loads(result.body)["headers"]["host"] == f"127.1:{loopback.port}"


async def test_the_policy_is_the_shared_address_policy() -> None:
    """One policy for tools and provider URLs: the same class, the same verdicts."""
    from warden.netpolicy import AddressPolicy

    policy = EgressPolicy.from_entries(["10.0.0.0/8"], max_bytes=10)
    assert isinstance(policy, AddressPolicy) and policy.max_bytes == 10
    assert await policy.resolve("10.1.2.3", 80) == await AddressPolicy.from_entries(["10.0.0.0/8"]).resolve(
        "10.1.2.3", 80)


async def test_allowed_fetch_keeps_host_header_and_sends_body(loopback) -> None:
    policy = EgressPolicy.from_entries(["localhost"])
    result = await policy.fetch("POST", f"http://localhost:{loopback.port}/echo?x=1",
                                headers={"content-type": "text/plain", "Host": "evil.example"},
                                body=b"hello")
    echoed = orjson.loads(result.body)
    assert result.status == 200 and not result.truncated and result.redirects == []
    assert echoed["method"] == "POST" and echoed["body"] == "hello"
    # The connection went to the pinned IP, the Host header kept the URL's name (not the caller's).
    assert echoed["headers"]["host"] == f"localhost:{loopback.port}"
    assert echoed["headers"]["user-agent"].startswith("Warden-Agent")
    assert result.content_type == "application/json"


async def test_redirect_from_allowed_to_forbidden_host_is_refused(loopback) -> None:
    policy = EgressPolicy.from_entries(["localhost"])
    target = f"http://127.0.0.1:{loopback.port}/echo"  # same server, but only "localhost" is allowed
    with pytest.raises(EgressRefused, match="127.0.0.1, a loopback address"):
        await policy.fetch("GET", f"http://localhost:{loopback.port}/redirect?to={target}")
    with pytest.raises(EgressRefused, match="169.254.169.254"):
        await policy.fetch("GET", f"http://localhost:{loopback.port}/redirect?to=http://169.254.169.254/")


async def test_redirects_followed_and_rechecked_when_allowed(loopback) -> None:
    policy = EgressPolicy.from_entries(["localhost", "127.0.0.1"])
    start = f"http://localhost:{loopback.port}/redirect?status=303&to=http://127.0.0.1:{loopback.port}/echo"
    result = await policy.fetch("POST", start, headers={"authorization": "Bearer s3cr3t-token",
                                                        "content-type": "text/plain", "x-keep": "1"},
                                body=b"payload")
    echoed = orjson.loads(result.body)
    assert result.redirects == [f"http://127.0.0.1:{loopback.port}/echo"]
    assert result.url == f"http://127.0.0.1:{loopback.port}/echo"
    assert echoed["method"] == "GET" and echoed["body"] == ""  # 303: GET without the body
    assert "authorization" not in echoed["headers"]  # another origin: credentials dropped
    assert "content-type" not in echoed["headers"] and echoed["headers"]["x-keep"] == "1"


async def test_307_keeps_method_body_and_same_origin_credentials(loopback) -> None:
    policy = EgressPolicy.from_entries(["127.0.0.1"])
    base = f"http://127.0.0.1:{loopback.port}"
    result = await policy.fetch("PUT", f"{base}/redirect?status=307&to=/echo",
                                headers={"authorization": "Bearer tok-123456789"}, body=b"data")
    echoed = orjson.loads(result.body)
    assert echoed["method"] == "PUT" and echoed["body"] == "data"
    assert echoed["headers"]["authorization"] == "Bearer tok-123456789"


async def test_redirect_loop_stops_at_the_limit(loopback) -> None:
    policy = EgressPolicy.from_entries(["127.0.0.1"], max_redirects=3)
    with pytest.raises(EgressError, match="too many redirects"):
        await policy.fetch("GET", f"http://127.0.0.1:{loopback.port}/loop")


async def test_body_is_cut_at_the_size_limit(loopback) -> None:
    policy = EgressPolicy.from_entries(["127.0.0.1"], max_bytes=100_000)
    result = await policy.fetch("GET", f"http://127.0.0.1:{loopback.port}/big?n=5000000")
    assert result.truncated and len(result.body) == 100_000
    small = await policy.fetch("GET", f"http://127.0.0.1:{loopback.port}/big?n=99999")
    assert not small.truncated and len(small.body) == 99_999


async def test_time_limit(loopback) -> None:
    policy = EgressPolicy.from_entries(["127.0.0.1"], timeout=0.3)
    with pytest.raises(EgressError, match="timed out after 0.3 s"):
        await policy.fetch("GET", f"http://127.0.0.1:{loopback.port}/slow?s=5")


async def test_connection_refused_is_an_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EgressError, match="request failed: ConnectError"):
        await EgressPolicy.from_entries(["127.0.0.1"]).fetch("GET", f"http://127.0.0.1:{port}/")


async def test_https_pins_the_ip_but_verifies_the_name(tls_loopback) -> None:
    server, ca = tls_loopback
    policy = EgressPolicy.from_entries(["localhost"], verify=ca)
    result = await policy.fetch("GET", f"https://localhost:{server.port}/echo")
    echoed = orjson.loads(result.body)
    assert echoed["headers"]["host"] == f"localhost:{server.port}"
    # The certificate names only "localhost": verification used the name, not 127.0.0.1.
    with pytest.raises(EgressError, match="request failed: ConnectError"):
        await EgressPolicy.from_entries(["127.0.0.1"], verify=ca).fetch(
            "GET", f"https://127.0.0.1:{server.port}/echo")
