"""Egress policy for the agents' HTTP tools: where a tool may connect, and how much.

An agent's HTTP request is written by a model, which may have been steered by
whatever text it read, so every hop is checked as if it were hostile:

- only ``http`` and ``https``;
- the host is resolved here and *every* address it resolves to must pass the
  address policy (``warden/netpolicy.py``, shared with the provider transport:
  public addresses only, in every IPv6 wrapping and numeric IPv4 form, unless
  the operator allows the host name or a CIDR with ``WARDEN_EGRESS_ALLOW``);
- the connection goes to an address that was checked (the IP is pinned; the
  next checked address is tried when one refuses the connection), so a
  DNS answer that changes between the check and the connect (DNS rebinding)
  cannot move the request to another address. The URL handed to httpx carries
  the IP; the ``Host`` header keeps the original name and, for https, the
  ``sni_hostname`` request extension makes the TLS handshake (SNI and
  certificate verification) use the original name too;
- redirects are followed here, one hop at a time (at most ``max_redirects``),
  and each hop is checked again from the start;
- the body is streamed and cut at ``max_bytes``; the whole exchange, DNS and
  redirects included, must finish within ``timeout`` seconds.

A fresh httpx client per fetch: connections are never pooled across requests,
so a connection opened for one host name is never reused for another name that
resolves to the same IP. ``trust_env=False`` keeps ``HTTP(S)_PROXY`` variables
from routing the request around the pinned address.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import httpx

from warden.netpolicy import AddressPolicy, EgressError, EgressRefused, forbidden_reason

__all__ = ["EgressError", "EgressPolicy", "EgressRefused", "FetchResult", "forbidden_reason"]

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
# Credentials never travel to another origin on a redirect.
_ORIGIN_BOUND_HEADERS = {"authorization", "cookie", "proxy-authorization"}
_USER_AGENT = "Warden-Agent/1 (+https://github.com/warden)"


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: int
    url: str  # after redirects
    headers: dict[str, str]
    body: bytes
    truncated: bool  # the body was longer than max_bytes and was cut
    redirects: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass(frozen=True, slots=True)
class EgressPolicy(AddressPolicy):
    """The address policy (``warden.netpolicy``: allow-list, ``resolve``) plus the fetch limits."""

    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    # TLS verification: True (system/certifi CAs) or an SSLContext (e.g. a private CA).
    verify: ssl.SSLContext | bool = True

    async def fetch(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                    body: bytes | None = None) -> FetchResult:
        """One request under the policy; raises EgressError (or EgressRefused)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(method.upper(), url, dict(headers or {}), body)
        except TimeoutError:
            raise EgressError(f"timed out after {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise EgressError(f"request failed: {type(exc).__name__}: {exc}") from None

    async def _fetch(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> FetchResult:
        headers = {k: v for k, v in headers.items() if k.lower() != "host"}  # we set Host
        headers.setdefault("user-agent", _USER_AGENT)
        target = _parse_url(url)
        redirects: list[str] = []
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=self.verify,
                                     timeout=self.timeout) as client:
            while True:
                response = await self._send(client, method, target, headers, body)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECTS or location is None:
                        content, truncated = await _read_capped(response, self.max_bytes)
                        return FetchResult(
                            status=response.status_code, url=str(target),
                            headers={k.lower(): v for k, v in response.headers.items()
                                     if k.lower() != "set-cookie"},
                            body=content, truncated=truncated, redirects=redirects,
                        )
                finally:
                    await response.aclose()
                if len(redirects) >= self.max_redirects:
                    raise EgressError(f"too many redirects (more than {self.max_redirects})")
                next_target = _parse_url(str(target.join(location)))
                if _origin(next_target) != _origin(target):
                    headers = {k: v for k, v in headers.items() if k.lower() not in _ORIGIN_BOUND_HEADERS}
                if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                    # What browsers do (RFC 9110 15.4): the next hop is a GET without the body.
                    method, body = ("HEAD" if method == "HEAD" else "GET"), None
                    headers = {k: v for k, v in headers.items()
                               if k.lower() not in ("content-type", "content-length")}
                redirects.append(str(next_target))
                target = next_target

    async def _send(self, client: httpx.AsyncClient, method: str, target: httpx.URL,
                    headers: dict[str, str], body: bytes | None) -> httpx.Response:
        host = target.raw_host.decode("ascii")  # IDNA-encoded, as DNS and SNI want it
        addresses = await self.resolve(host, target.port or _default_port(target.scheme))
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        for i, ip in enumerate(addresses):
            request = client.build_request(
                method, target.copy_with(host=ip), headers={**headers, "host": target.netloc.decode("ascii")},
                content=body, extensions=extensions,
            )
            try:
                return await client.send(request, stream=True)
            except httpx.ConnectError:
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: resolve() returns at least one address")  # pragma: no cover


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise EgressError(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise EgressRefused(f"refused: only http and https URLs are allowed, not {parsed.scheme or 'none'!r}")
    if not parsed.host:
        raise EgressError(f"invalid URL: no host in {url!r}")
    return parsed


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or _default_port(url.scheme)


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the (decoded) body; stops reading once over it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = limit - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False
