"""Transport shared by the provider adapters.

- One pooled ``aiohttp.ClientSession`` per process (keep-alive, bounded pool, no
  retries: failover decides about retries, not the transport). aiohttp rather
  than httpx on this path: measured on loopback, httpx's pool costs ~1 ms of CPU
  per request and scans every pooled connection (a syscall each) per request, so
  a gateway on it tops out near 900 req/s sequential and ~250 req/s at 64
  concurrent calls; aiohttp does ~3,600 and ~2,500 on the same core.
- Timeouts from ``Endpoint.timeouts``: connect, first byte (response headers and,
  for streams, the first event) and the gap between stream events. Every one of
  them surfaces as :class:`Timeout`.
- A small SSE decoder (comments and keep-alives ignored). It is hand-written
  because it is twenty lines and sits on the hot path of every stream; the
  ``httpx-sse`` package would add a dependency for the same loop.
- Helpers to classify errors (status code defaults, ``retry-after``) and to turn
  bad upstream bytes into :class:`UpstreamMalformed`, logged truncated and
  redacted.
"""

from __future__ import annotations

import asyncio
import weakref
import contextlib
import email.utils
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    Timeout,
    UpstreamMalformed,
)
from warden.gateway.types import Endpoint, Timeouts
from warden.logs import redact

log = logging.getLogger("warden.gateway.providers")

# (provider, status, headers, raw body) -> the typed error for that reply.
Classifier = Callable[[str, int, Mapping[str, str], bytes], ProviderError]

MAX_CONNECTIONS = 1000
KEEPALIVE_S = 30.0


class UpstreamClient:
    """The pooled HTTP session of one event loop (all providers share it)."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_S
            ),
            # Proxies come from proxy_for(): aiohttp's trust_env would re-read the
            # environment and ~/.netrc (in a thread) on every request.
            trust_env=False,
            raise_for_status=False,
        )

    @property
    def is_closed(self) -> bool:
        return self.session.closed

    async def aclose(self) -> None:
        await self.session.close()


# One client per event loop: connections belong to the loop that opened them. A
# server has one loop; tests and embedders may run several side by side.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UpstreamClient] = (
    weakref.WeakKeyDictionary()
)


def get_client() -> UpstreamClient:
    """The pooled client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = UpstreamClient()
    return client


async def aclose_client() -> None:
    """Close the running loop's pooled client (at shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


@lru_cache(maxsize=256)
def _proxy(scheme: str, host: str) -> str | None:
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(scheme)


def proxy_for(url: str) -> str | None:
    """The HTTP(S)_PROXY that applies to ``url`` (NO_PROXY honoured), read once per host."""
    parts = urlsplit(url)
    return _proxy(parts.scheme, parts.hostname or "")


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """The transport's own limits; the first-byte and gap limits are enforced around them."""
    return aiohttp.ClientTimeout(
        total=None, connect=t.connect, sock_read=max(t.first_byte, t.stream_gap)
    )


def auth_headers(ep: Endpoint) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    headers.update(ep.headers)
    if ep.api_key and ep.auth == "bearer":
        headers["authorization"] = f"Bearer {ep.api_key}"
    elif ep.api_key and ep.auth in ("x-api-key", "x-goog-api-key"):
        headers[ep.auth] = ep.api_key
    return headers


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + path


# --- redaction and malformed data -------------------------------------------

def preview(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return redact(text[:limit])


def malformed(provider: str, raw: bytes | str, why: str) -> UpstreamMalformed:
    log.warning("malformed reply from %s (%s): %r", provider, why, preview(raw))
    return UpstreamMalformed(f"{provider}: malformed upstream reply ({why})", provider=provider)


def loads(provider: str, raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed(provider, raw, "invalid JSON") from None


@contextlib.contextmanager
def expect_shape(provider: str, raw: bytes | str) -> Iterator[None]:
    """Turn a missing key / wrong type while reading a reply into UpstreamMalformed."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise malformed(provider, raw, f"unexpected shape: {type(exc).__name__}") from None


# --- error classification helpers -------------------------------------------


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000.0)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def class_for_status(status: int) -> type[ProviderError]:
    """The default class for an HTTP status when the body says nothing more precise."""
    if status in (401, 403):
        return AuthFailed
    if status == 408:
        return Timeout
    if status == 413:
        return ContextTooLong
    if status == 429:
        return RateLimited
    if status == 504:
        return Timeout
    if status >= 500:
        return Overloaded
    return BadRequest


def build_error(
    cls: type[ProviderError],
    provider: str,
    status: int | None,
    message: str,
    retry_after: float | None = None,
) -> ProviderError:
    detail = redact(message[:300]) if message else f"HTTP {status}"
    return cls(
        f"{provider}: {detail}", provider=provider, upstream_status=status, retry_after=retry_after
    )


def error_body(raw: bytes) -> Any:
    """The parsed error body, or None when it is not JSON (proxies send HTML)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# --- transport ---------------------------------------------------------------


def _undecodable(exc: aiohttp.ClientPayloadError) -> bool:
    """A body whose content-encoding cannot be decoded (aiohttp wraps that in a payload error)."""
    cause = exc.__cause__ or exc.__context__
    return "content-encoding" in str(exc).lower() or type(cause).__name__ == "ContentEncodingError"


@contextlib.contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Map aiohttp / asyncio failures onto the provider taxonomy."""
    try:
        yield
    except TimeoutError:  # asyncio's and aiohttp's (ServerTimeoutError) alike
        raise Timeout(f"{provider}: upstream timed out", provider=provider) from None
    except aiohttp.ClientConnectorError:
        raise ConnectFailed(f"{provider}: could not connect", provider=provider) from None
    except aiohttp.ClientPayloadError as exc:
        if _undecodable(exc):
            raise malformed(provider, b"", "undecodable body") from None
        raise ConnectFailed(f"{provider}: connection failed or dropped", provider=provider) from None
    except (aiohttp.ClientError, ValueError):
        # Dropped connection, protocol violation, bad URL or scheme: unreachable.
        raise ConnectFailed(
            f"{provider}: connection failed or dropped", provider=provider
        ) from None


async def request_json(
    ep: Endpoint,
    method: str,
    url: str,
    headers: Mapping[str, str],
    classify: Classifier,
    body: bytes | None = None,
) -> tuple[Any, bytes]:
    """One request, the whole body read; errors raised typed. Returns (parsed JSON, raw)."""
    session = get_client().session
    with transport_errors(ep.provider):
        async with asyncio.timeout(ep.timeouts.first_byte):
            response = await session.request(
                method, url, headers=headers, data=body, timeout=client_timeout(ep.timeouts),
                allow_redirects=False, proxy=proxy_for(url),
            )
        try:
            raw = await response.read()
        finally:
            response.release()
    if response.status >= 400:
        raise classify(ep.provider, response.status, response.headers, raw)
    return loads(ep.provider, raw), raw


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Feed it lines; it returns an event at each blank line that ends one."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line[0] == ":":  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # id / retry fields mean nothing to us

    def flush(self) -> SSEEvent | None:
        return self.feed("")


async def stream_sse(
    ep: Endpoint,
    url: str,
    headers: Mapping[str, str],
    classify: Classifier,
    body: bytes,
) -> AsyncIterator[SSEEvent]:
    """POST and yield the SSE events of the reply.

    The first event must arrive within ``first_byte`` of the call; each later one
    within ``stream_gap`` of the previous line. Closing this iterator (or
    cancelling its consumer) closes the upstream response.
    """
    session = get_client().session
    loop = asyncio.get_running_loop()
    first_deadline = loop.time() + ep.timeouts.first_byte
    with transport_errors(ep.provider):
        async with asyncio.timeout_at(first_deadline):
            response = await session.post(
                url, headers=headers, data=body, timeout=client_timeout(ep.timeouts),
                allow_redirects=False, proxy=proxy_for(url),
            )
        try:
            if response.status >= 400:
                async with asyncio.timeout(ep.timeouts.stream_gap):
                    raw = await response.read()
                raise classify(ep.provider, response.status, response.headers, raw)
            decoder = SSEDecoder()
            lines = iter_lines(response.content)
            seen_event = False
            while True:
                deadline = (
                    first_deadline if not seen_event else loop.time() + ep.timeouts.stream_gap
                )
                try:
                    async with asyncio.timeout_at(deadline):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                event = decoder.feed(line)
                if event is not None:
                    seen_event = True
                    yield event
            event = decoder.flush()
            if event is not None:
                yield event
        finally:
            # Returns a fully read connection to the pool; closes one cut short.
            response.release()


async def iter_lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Lines of a body as they arrive (``\n``, ``\r\n`` or ``\r`` endings), of any length."""
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        # A CR at the very end may be the first half of a CRLF split across two chunks.
        held_cr = pending.endswith(b"\r")
        if held_cr:
            pending = pending[:-1]
        if b"\r" in pending:
            pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
        if held_cr:
            pending += b"\r"
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")
