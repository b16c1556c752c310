"""The shared transport helpers: SSE decoding, retry-after, redaction, the pooled clients,
the address check of restricted endpoints, and the bounds on what an upstream may send."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.providers import chat, endpoint

from warden.gateway.errors import (
    AddressRefused,
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ConnectTimeout,
    ContextTooLong,
    Overloaded,
    RateLimited,
    Timeout,
    Unreachable,
    UpstreamMalformed,
    UpstreamTooLarge,
)
from warden.gateway.providers import http
from warden.gateway.providers.pool import CheckingResolver
from warden.gateway.providers.sse import LineSplitter, LineTooLong
from warden.gateway.types import Endpoint
from warden.netpolicy import AddressPolicy
from warden.logs import redact
from warden.gateway.providers.base import split_data_url
from warden.gateway.providers.adapters import get_adapter
from warden.testing.upstream import Behaviour, UpstreamServer


def decode(lines: list[str]) -> list[http.SSEEvent]:
    decoder = http.SSEDecoder()
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    last = decoder.flush()
    return events + ([last] if last else [])


def test_sse_decoder_handles_comments_events_multiline_and_unterminated_tail() -> None:
    lines = [
        ": keep-alive",
        "",
        "",
        "event: message_start",
        "id: 7",
        "retry: 100",
        'data: {"a":',
        "data:1}",
        "",
        "data: [DONE]",
        "",
        "data:no-space",  # the stream ends without a blank line
    ]
    assert decode(lines) == [
        http.SSEEvent("message_start", '{"a":\n1}'),
        http.SSEEvent("message", "[DONE]"),
        http.SSEEvent("message", "no-space"),
    ]
    assert http.SSEDecoder().flush() is None


def test_parse_retry_after_variants() -> None:
    assert http.parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert http.parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0
    assert http.parse_retry_after({}) is None
    assert http.parse_retry_after({"retry-after": "not a date"}) is None
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < (http.parse_retry_after({"retry-after": future}) or 0) <= 120
    past = email.utils.formatdate(time.time() - 120, usegmt=True)
    assert http.parse_retry_after({"retry-after": past}) == 0.0


def test_redaction_and_preview() -> None:
    text = "key sk-ant-api03-abcdefgh and AIzaSyA1234567890 and Bearer abc.def-ghi and " + "x" * 40
    out = redact(text)
    assert (
        "abcdefgh" not in out
        and "AIzaSy" not in out
        and "abc.def" not in out
        and "x" * 40 not in out
    )
    assert out.count("[REDACTED]") == 4
    assert http.preview(b"a" * 10 + b"\xff" * 500).startswith("aaaaaaaaaa")
    assert len(http.preview("short text")) == 10


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, AuthFailed),
        (403, AuthFailed),
        (404, BadRequest),
        (408, Timeout),
        (413, ContextTooLong),
        (429, RateLimited),
        (500, Overloaded),
        (503, Overloaded),
        (504, Timeout),
        (529, Overloaded),
    ],
)
def test_class_for_status(status: int, cls: type) -> None:
    assert http.class_for_status(status) is cls


def test_build_error_without_message_names_status() -> None:
    err = http.build_error(Overloaded, "p", 503, "")
    assert err.message == "p: HTTP 503" and err.upstream_status == 503


async def test_one_pooled_client_per_loop() -> None:
    first = http.get_client()
    assert http.get_client() is first
    await http.aclose_client()
    assert first.is_closed
    second = http.get_client()
    assert second is not first
    await http.aclose_client()


def test_get_adapter_and_unknown_wire() -> None:
    assert get_adapter("gemini").wire == "gemini"
    assert get_adapter("openai") is get_adapter("openai")
    with pytest.raises(ValueError, match="unknown wire"):
        get_adapter("cohere")


def test_split_data_url() -> None:
    assert split_data_url("data:image/png;base64,AAA") == ("image/png", "AAA")
    assert split_data_url("data:;base64,AAA") == ("application/octet-stream", "AAA")
    assert split_data_url("data:text/plain,hello") is None
    assert split_data_url("https://x/y.png") is None


async def test_unsupported_scheme_is_connect_failed() -> None:
    up = UpstreamServer("openai")
    ep = dataclasses.replace(endpoint(up), base_url="ftp://127.0.0.1:1/v1")
    with pytest.raises(ConnectFailed):
        await get_adapter("openai").complete(ep, chat("hi"))


async def test_refused_connection_is_endpoint_level() -> None:
    async with UpstreamServer("openai") as up:
        ep = endpoint(up)
        await up.go_down()
        with pytest.raises(Unreachable) as exc:
            await get_adapter("openai").complete(ep, chat("hi"))
    assert exc.value.endpoint_level and exc.value.code == "upstream_unreachable"


def test_connect_timeout_is_endpoint_level_but_a_read_timeout_is_not() -> None:
    with pytest.raises(ConnectTimeout) as exc, http.transport_errors("openai"):
        raise aiohttp.ConnectionTimeoutError("connect timed out")
    assert exc.value.endpoint_level and exc.value.code == "upstream_connect_timeout"
    with pytest.raises(Timeout) as exc, http.transport_errors("openai"):
        raise aiohttp.SocketTimeoutError("read timed out")
    assert not exc.value.endpoint_level
    with pytest.raises(ConnectFailed) as exc, http.transport_errors("openai"):
        raise aiohttp.ServerDisconnectedError()
    assert not exc.value.endpoint_level  # a dropped reply says nothing of the host


async def test_undecodable_body_is_malformed(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(raw=b"not gzip at all", headers={"content-encoding": "gzip"}))
    with pytest.raises(UpstreamMalformed, match="undecodable"):
        await get_adapter("openai").complete(endpoint(openai_up), chat("hi"))


# --- restricted endpoints: the address policy at connect time ------------------

INNER_FORMS = ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}",
               "http://[::ffff:127.0.0.1]:{port}", "http://2130706433:{port}",
               "http://0x7f000001:{port}", "http://127.1:{port}"]


def restricted(up: UpstreamServer, form: str, policy: AddressPolicy | None = None) -> Endpoint:
    return dataclasses.replace(endpoint(up), base_url=form.format(port=up.port) + "/v1",
                               egress=policy or AddressPolicy())


@pytest.mark.parametrize("form", INNER_FORMS)
async def test_restricted_endpoint_connects_to_no_inner_address(openai_up: UpstreamServer, form: str) -> None:
    adapter = get_adapter("openai")
    with pytest.raises(AddressRefused, match="WARDEN_EGRESS_ALLOW") as refused:
        await adapter.complete(restricted(openai_up, form), chat("hi"))
    assert refused.value.code == "upstream_address_refused" and not refused.value.retryable
    with pytest.raises(AddressRefused):
        await collect_stream(restricted(openai_up, form))
    with pytest.raises(AddressRefused):
        await adapter.list_models(restricted(openai_up, form))
    assert openai_up.requests == []  # not one byte, so not the key either


async def collect_stream(ep: Endpoint) -> list:
    return [e async for e in get_adapter("openai").stream(ep, chat("hi"))]


async def test_an_operator_connection_is_never_reused_for_a_tenant(openai_up: UpstreamServer) -> None:
    adapter = get_adapter("openai")
    await adapter.complete(endpoint(openai_up), chat("hi"))  # pooled: keep-alive to 127.0.0.1
    with pytest.raises(AddressRefused):
        await adapter.complete(restricted(openai_up, "http://127.0.0.1:{port}"), chat("hi"))
    with pytest.raises(AddressRefused):
        await adapter.complete(restricted(openai_up, "http://localhost:{port}"), chat("hi"))
    assert len(openai_up.requests) == 1
    await adapter.complete(endpoint(openai_up), chat("hi"))  # the operator's own still works
    assert len(openai_up.requests) == 2


async def test_the_allow_list_reopens_an_address_by_network_or_name(openai_up: UpstreamServer) -> None:
    adapter = get_adapter("openai")
    by_net = AddressPolicy.from_entries(["127.0.0.0/8"])
    await adapter.complete(restricted(openai_up, "http://127.0.0.1:{port}", by_net), chat("hi"))
    by_name = AddressPolicy.from_entries(["localhost"])  # ::1 and 127.0.0.1 both, through the resolver
    await adapter.complete(restricted(openai_up, "http://localhost:{port}", by_name), chat("hi"))
    assert len(openai_up.requests) == 2
    with pytest.raises(AddressRefused):  # an allowed network admits only its own addresses
        await adapter.complete(restricted(openai_up, "http://[::1]:{port}", by_net), chat("hi"))


async def test_connect_time_refusal_is_the_resolvers(openai_up: UpstreamServer) -> None:
    """A name is judged by what it resolves to when the connection opens (DNS rebinding)."""
    resolver = CheckingResolver(AddressPolicy())
    with pytest.raises(OSError, match="localhost resolves to"):
        await resolver.resolve("localhost", openai_up.port)
    assert await CheckingResolver(AddressPolicy.from_entries(["localhost"])).resolve("localhost", 80)
    await resolver.close()


# --- bounded replies ---------------------------------------------------------

MiB = 1024 * 1024


def bounded(up: UpstreamServer, reply: int = MiB, event: int = 64 * 1024) -> Endpoint:
    return endpoint(up, max_reply_bytes=reply, max_event_bytes=event)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def endless_server(head: bytes, chunk: bytes, total: int) -> AsyncIterator[str]:
    """A raw HTTP/1.1 server whose reply body is ``total`` bytes of ``chunk``, with no length."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in request.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        try:
            writer.write(head)
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # the client stopped reading: what a bound is for
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()


JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


async def test_a_reply_over_the_bound_is_refused_at_its_length(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(raw=b'{"a": "' + b"x" * (2 * MiB) + b'"}'))
    with pytest.raises(UpstreamTooLarge, match="reply of 2097161 bytes over the 1048576-byte bound") as exc:
        await get_adapter("openai").complete(bounded(openai_up), chat("hi"))
    assert exc.value.code == "upstream_reply_too_large" and exc.value.status == 502
    openai_up.enqueue(Behaviour(raw=b'{"a": "' + b"x" * (MiB - 100) + b'"}'))  # under: parsed as usual
    with pytest.raises(UpstreamMalformed, match="unexpected shape"):
        await get_adapter("openai").complete(bounded(openai_up), chat("hi"))


async def test_a_reply_without_length_stops_at_the_bound() -> None:
    async with endless_server(JSON_HEAD, b"x" * 65536, 64 * MiB) as url:
        ep = dataclasses.replace(bounded(UpstreamServer("openai")), base_url=url)
        with pytest.raises(UpstreamTooLarge, match="a reply over the 1048576-byte bound"):
            await get_adapter("openai").complete(ep, chat("hi"))


async def test_one_endless_stream_line_stops_at_the_bound() -> None:
    async with endless_server(SSE_HEAD + b"data: ", b"x" * 65536, 64 * MiB) as url:
        ep = dataclasses.replace(bounded(UpstreamServer("openai")), base_url=url)
        with pytest.raises(UpstreamTooLarge, match="a stream line over the 65536-byte bound"):
            await collect_stream(ep)


async def test_a_stream_event_of_many_lines_stops_at_the_bound() -> None:
    async with endless_server(SSE_HEAD, b"data: " + b"y" * 1000 + b"\n", 64 * MiB) as url:
        ep = dataclasses.replace(bounded(UpstreamServer("openai")), base_url=url)
        with pytest.raises(UpstreamTooLarge, match="a stream event over the 65536-byte bound"):
            await collect_stream(ep)


async def test_events_under_the_bound_pass(openai_up: UpstreamServer) -> None:
    text = "z" * 50_000  # one event close to the 64 KiB bound
    openai_up.enqueue(Behaviour(text=text, chunks=1))
    events = await collect_stream(dataclasses.replace(bounded(openai_up), base_url=openai_up.base_url))
    assert "".join(e.text for e in events if hasattr(e, "text")) == text


async def test_a_huge_error_body_is_classified_from_its_start(openai_up: UpstreamServer) -> None:
    body = b'{"error": {"message": "bad key", "type": "invalid_api_key"}}' + b" " * (8 * MiB)
    openai_up.enqueue(Behaviour(status=401, raw=body), Behaviour(status=401, raw=body))
    with pytest.raises(AuthFailed):
        await get_adapter("openai").complete(bounded(openai_up), chat("hi"))
    with pytest.raises(AuthFailed):
        await collect_stream(bounded(openai_up))


@given(st.lists(st.sampled_from(["a", "bc", "\n", "\r", "\r\n", "é"]), max_size=30),
       st.lists(st.integers(1, 8), min_size=1, max_size=10))
def test_lines_split_like_str_splitlines_at_any_chunking(pieces: list[str], cuts: list[int]) -> None:
    raw = "".join(pieces).encode()
    chunks, i = [], 0
    for n in cuts * 20:
        if i >= len(raw):
            break
        chunks.append(raw[i:i + n])
        i += n
    chunks.append(raw[i:])
    splitter = LineSplitter()
    lines = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.close()
    expected = raw.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert lines == (expected[:-1] if expected[-1] == "" else expected)
    assert not splitter.pending and splitter.close() == []


@given(st.lists(st.integers(0, 12), min_size=1, max_size=6), st.integers(1, 8), st.integers(1, 10))
def test_a_line_over_the_limit_is_refused_however_it_arrives(lengths: list[int], limit: int, cut: int) -> None:
    raw = b"".join(b"x" * n + b"\n" for n in lengths)
    splitter, lines, refused = LineSplitter(limit), [], False
    try:
        for i in range(0, len(raw), cut):
            lines += splitter.feed(raw[i:i + cut])
    except LineTooLong:
        refused = True
    assert refused == any(n > limit for n in lengths)
    if not refused:
        assert lines == ["x" * n for n in lengths]


# A process receiving a 400 MB upstream reply (one JSON body, or one SSE line), default bounds:
# prints its peak RSS before and after, in KiB, and how the call ended.
_BIG_REPLY_SCRIPT = r"""
import asyncio, resource, sys
from warden.gateway.errors import ProviderError
from warden.gateway.providers import http
from warden.gateway.types import Endpoint

async def main(kind):
    chunk = b"x" * (1 << 20)
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: "
                     + (b"text/event-stream\r\n\r\ndata: " if kind == "sse" else b"application/json\r\n\r\n"))
        try:
            for _ in range(400):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    ep = Endpoint(provider="big", wire="openai", base_url=url, model="m")
    classify = lambda *a: ProviderError("error status")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        if kind == "sse":
            async for _ in http.stream_sse(ep, url, {"content-type": "application/json"}, classify, b"{}"):
                pass
        else:
            await http.request_json(ep, "POST", url, {"content-type": "application/json"}, classify, b"{}")
        outcome = "read"
    except ProviderError as exc:
        outcome = type(exc).__name__
    print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, outcome)
    await http.aclose_client()
    server.close()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("kind", ["reply", "sse"])
def test_a_400_mb_reply_costs_at_most_its_bound_in_memory(kind: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _BIG_REPLY_SCRIPT, kind], capture_output=True,
                          text=True, timeout=120, check=True)
    before_kib, peak_kib, outcome = done.stdout.split()
    assert outcome == "UpstreamTooLarge"
    # The bound (32 MiB reply, 8 MiB event) plus copies of it, far below the 400 MB sent.
    assert (int(peak_kib) - int(before_kib)) < 128 * 1024, done.stdout


async def test_a_cookie_one_reply_sets_never_rides_on_the_next_call() -> None:
    """One pooled session serves every tenant: a provider's Set-Cookie (a load
    balancer's, say) must not travel with another tenant's request."""
    from aiohttp import web

    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("cookie"))
        response = web.json_response({"ok": True})
        response.set_cookie("lb", "tenant-a-session")
        return response

    app = web.Application()
    app.router.add_post("/v1/x", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        ep = endpoint(UpstreamServer("openai"))
        url = f"http://localhost:{port}/v1/x"  # a name: aiohttp keeps no cookies of IP hosts
        for _ in range(2):
            parsed, _raw = await http.request_json(ep, "POST", url, {}, http.build_error, b"{}")
            assert parsed == {"ok": True}
        assert seen == [None, None]
    finally:
        await runner.cleanup()
        await http.aclose_client()
