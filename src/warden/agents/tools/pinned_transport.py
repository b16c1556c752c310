"""An httpx2 transport that connects only to addresses checked beforehand.

The MCP SDK's HTTP client would resolve the server's host name again on every
new connection; a DNS answer that changes after the egress check (DNS
rebinding) could then move it to a private address. This transport sends each
request for the checked host to one of the checked IPs instead (the next one
when an address refuses the connection), keeping the ``Host`` header and, for
https, the TLS server name (SNI and certificate check) of the original name.
A request for any other host is refused. Used with ``trust_env=False`` on the
client, so ``HTTP(S)_PROXY`` variables cannot route around the pin either.
"""

from __future__ import annotations

import ssl

import httpx2


class PinnedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, host: str, addresses: list[str], *, verify: ssl.SSLContext | bool = True) -> None:
        if not addresses:
            raise ValueError("at least one checked address is needed")
        self.host = host.lower()
        self.addresses = list(addresses)
        self._inner = httpx2.AsyncHTTPTransport(verify=verify, trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.raw_host.decode("ascii").lower()
        if host != self.host:
            raise httpx2.ConnectError(f"refused: {host!r} is not the host that was checked", request=request)
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = host
        for i, ip in enumerate(self.addresses):
            pinned = httpx2.Request(request.method, request.url.copy_with(host=ip), headers=request.headers,
                                    stream=request.stream, extensions=extensions)
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError:
                if i == len(self.addresses) - 1:
                    raise
        raise AssertionError("unreachable: there is at least one address")  # pragma: no cover

    async def aclose(self) -> None:
        await self._inner.aclose()


def pinned_client(host: str, addresses: list[str], *, headers: dict[str, str] | None = None,
                  timeout: httpx2.Timeout, verify: ssl.SSLContext | bool = True) -> httpx2.AsyncClient:
    """An AsyncClient for the MCP transports whose every connection goes to ``addresses``."""
    return httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False,
                              transport=PinnedTransport(host, addresses, verify=verify))
