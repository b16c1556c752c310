"""Transport shared by the provider adapters.

- One pooled ``httpx.AsyncClient`` per process (keep-alive, bounded pool, no
  retries: failover decides about retries, not the transport).
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
import contextlib
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
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

log = logging.getLogger("warden.gateway.providers")

# (provider, status, headers, raw body) -> the typed error for that reply.
Classifier = Callable[[str, int, Mapping[str, str], bytes], ProviderError]

_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30.0)

_client: httpx.AsyncClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def get_client() -> httpx.AsyncClient:
    """The process-wide pooled client.

    Connections belong to an event loop, so a new loop (tests, a restarted
    worker) gets a new client; in a server there is one loop and one client.
    """
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop or _client.is_closed:
        _client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(retries=0, limits=_LIMITS),
            follow_redirects=False,
        )
        _client_loop = loop
    return _client


async def aclose_client() -> None:
    """Close the pooled client (at shutdown)."""
    global _client, _client_loop
    if _client is not None and _client_loop is asyncio.get_running_loop():
        await _client.aclose()
    _client, _client_loop = None, None


def httpx_timeout(t: Timeouts) -> httpx.Timeout:
    """httpx's own per-operation limits; the first-byte and gap limits are enforced around them."""
    return httpx.Timeout(
        connect=t.connect, read=max(t.first_byte, t.stream_gap), write=t.first_byte, pool=t.connect
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

_KEY_SHAPED = re.compile(
    r"(?:sk-|sk_|wk-|AIza|key-|Bearer\s+)[A-Za-z0-9_\-\.]{6,}|[A-Za-z0-9_\-]{32,}"
)


def redact(text: str) -> str:
    """Replace anything that looks like a credential."""
    return _KEY_SHAPED.sub("[redacted]", text)


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


@contextlib.contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Map httpx / asyncio failures onto the provider taxonomy."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError):
        raise Timeout(f"{provider}: upstream timed out", provider=provider) from None
    except httpx.ConnectError:
        raise ConnectFailed(f"{provider}: could not connect", provider=provider) from None
    except httpx.DecodingError:
        raise malformed(provider, b"", "undecodable body") from None
    except (httpx.TransportError, httpx.InvalidURL):
        # Dropped connection, protocol violation, bad scheme: the deployment is unreachable.
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
    client = get_client()
    request = client.build_request(
        method, url, headers=headers, content=body, timeout=httpx_timeout(ep.timeouts)
    )
    with transport_errors(ep.provider):
        async with asyncio.timeout(ep.timeouts.first_byte):
            response = await client.send(request, stream=True)
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
    if response.status_code >= 400:
        raise classify(ep.provider, response.status_code, response.headers, raw)
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
    client = get_client()
    request = client.build_request(
        "POST", url, headers=headers, content=body, timeout=httpx_timeout(ep.timeouts)
    )
    loop = asyncio.get_running_loop()
    first_deadline = loop.time() + ep.timeouts.first_byte
    with transport_errors(ep.provider):
        async with asyncio.timeout_at(first_deadline):
            response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                async with asyncio.timeout(ep.timeouts.stream_gap):
                    raw = await response.aread()
                raise classify(ep.provider, response.status_code, response.headers, raw)
            decoder = SSEDecoder()
            lines = response.aiter_lines()
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
            await response.aclose()
