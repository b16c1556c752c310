"""Transport shared by the provider adapters.

- The sessions, the address check of restricted endpoints and proxies are in
  ``pool.py``; this module sends and reads.
- Timeouts from ``Endpoint.timeouts``: connect, first byte (response headers and,
  for streams, the first event) and the gap between stream events. Every one of
  them surfaces as :class:`Timeout`.
- Streams are read a chunk at a time and split into SSE events by ``sse.py``.
- Bounded reads: a reply body over ``Timeouts.max_reply_bytes`` (refused at its
  ``content-length`` when it declares one), or a stream line or event over
  ``max_event_bytes``, stops the read and raises :class:`UpstreamTooLarge`;
  error bodies are read up to ``ERROR_BODY_BYTES`` and classified from that.
- Helpers to classify errors (status code defaults, ``retry-after``) and to turn
  bad upstream bytes into :class:`UpstreamMalformed`, logged truncated and
  redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import aiohttp
import orjson

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ConnectTimeout,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    Timeout,
    Unreachable,
    UpstreamMalformed,
    UpstreamTooLarge,
)
from warden.gateway.types import Endpoint, Timeouts
from warden.gateway.providers.pool import Refused, refused, route
from warden.gateway.providers.pool import aclose_client as aclose_client  # the server closes it
from warden.gateway.providers.pool import get_client as get_client
from warden.gateway.providers.sse import LineSplitter, LineTooLong, SSEDecoder
from warden.gateway.providers.sse import SSEEvent as SSEEvent  # the adapters' event type
from warden.logs import redact

log = logging.getLogger("warden.gateway.providers")

# (provider, status, headers, raw body) -> the typed error for that reply.
Classifier = Callable[[str, int, Mapping[str, str], bytes], ProviderError]

ERROR_BODY_BYTES = 64 * 1024  # of an error reply: enough for any provider's error JSON


@lru_cache(maxsize=64)  # a handful of distinct Timeouts exist; one object each, not one a call
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
    detail = redact(message)[:300] if message else f"HTTP {status}"  # redact whole: a cut key would slip through
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
    except aiohttp.ConnectionTimeoutError:
        raise ConnectTimeout(f"{provider}: could not connect in time", provider=provider) from None
    except TimeoutError:  # asyncio's and aiohttp's (ServerTimeoutError) alike
        raise Timeout(f"{provider}: upstream timed out", provider=provider) from None
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, Refused):
            raise refused(provider, str(exc.os_error)) from None
        raise Unreachable(f"{provider}: could not connect", provider=provider) from None
    except aiohttp.ClientConnectorError:  # refused, unreachable, TLS handshake or certificate
        raise Unreachable(f"{provider}: could not connect", provider=provider) from None
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
    """One request, the whole body read (within bounds); errors raised typed. Returns (parsed JSON, raw)."""
    session, proxy = await route(ep, url)
    with transport_errors(ep.provider):
        async with asyncio.timeout(ep.timeouts.first_byte):
            response = await session.request(
                method, url, headers=headers, data=body, timeout=client_timeout(ep.timeouts),
                allow_redirects=False, proxy=proxy,
            )
        try:
            if response.status >= 400:
                raw = await read_bounded(response, ERROR_BODY_BYTES)
                raise classify(ep.provider, response.status, response.headers, raw)
            raw = await read_bounded(response, ep.timeouts.max_reply_bytes, provider=ep.provider)
        finally:
            response.release()
    return loads(ep.provider, raw), raw


async def read_bounded(response: aiohttp.ClientResponse, limit: int, *,
                       provider: str | None = None) -> bytes:
    """The (decoded) body, never more than ``limit`` bytes of it in memory.

    With ``provider`` a longer body raises UpstreamTooLarge; without, it is cut at
    ``limit`` (error bodies: their first bytes say what went wrong). Either way
    the rest is never read and the connection is closed, not pooled.
    """
    declared = response.content_length
    if provider is not None and declared is not None and declared > limit:
        response.close()
        raise too_large(provider, f"a reply of {declared} bytes", limit)
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            response.close()
            if provider is not None:
                raise too_large(provider, "a reply", limit)
            return bytes(body[:limit])
    return bytes(body)


def too_large(provider: str, what: str, limit: int) -> UpstreamTooLarge:
    log.warning("%s from %s is over the %d-byte bound; not read further", what, provider, limit)
    return UpstreamTooLarge(f"{provider}: {what} over the {limit}-byte bound was refused",
                            provider=provider)


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
    session, proxy = await route(ep, url)
    loop = asyncio.get_running_loop()
    first_deadline = loop.time() + ep.timeouts.first_byte
    limit = ep.timeouts.max_event_bytes
    with transport_errors(ep.provider):
        async with asyncio.timeout_at(first_deadline):
            response = await session.post(
                url, headers=headers, data=body, timeout=client_timeout(ep.timeouts),
                allow_redirects=False, proxy=proxy,
            )
        try:
            if response.status >= 400:
                async with asyncio.timeout(ep.timeouts.stream_gap):
                    raw = await read_bounded(response, ERROR_BODY_BYTES)
                raise classify(ep.provider, response.status, response.headers, raw)
            decoder, splitter = SSEDecoder(), LineSplitter(limit)
            seen_event = False
            line_wait = loop.time()  # when the wait for the line being read began
            while True:
                # Before the first event, the first-byte deadline; then each line within the gap.
                deadline = line_wait + ep.timeouts.stream_gap if seen_event else first_deadline
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await response.content.readany()
                    lines = splitter.feed(chunk) if chunk else splitter.close()
                except LineTooLong:
                    response.close()
                    raise too_large(ep.provider, "a stream line", limit) from None
                for line in lines:
                    event = decoder.feed(line)
                    if decoder.size > limit:
                        response.close()
                        raise too_large(ep.provider, "a stream event", limit)
                    if event is not None:
                        seen_event = True
                        yield event
                if not chunk:
                    break
                if lines:  # a line ended: the next one's gap starts now (after its consumer)
                    line_wait = loop.time()
            event = decoder.flush()
            if event is not None:
                yield event
        finally:
            # Returns a fully read connection to the pool; closes one cut short.
            response.release()
