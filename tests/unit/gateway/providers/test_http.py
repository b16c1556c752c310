"""The shared transport helpers: SSE decoding, retry-after, redaction, the pooled client."""

from __future__ import annotations

import dataclasses
import email.utils
import time

import pytest
from tests.support.providers import chat, endpoint

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ContextTooLong,
    Overloaded,
    RateLimited,
    Timeout,
)
from warden.gateway.providers import http
from warden.logs import redact
from warden.gateway.providers.base import split_data_url
from warden.gateway.providers.adapters import get_adapter
from warden.testing.upstream import UpstreamServer


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


async def test_undecodable_body_is_malformed(openai_up: UpstreamServer) -> None:
    from warden.gateway.errors import UpstreamMalformed
    from warden.testing.upstream import Behaviour

    openai_up.enqueue(Behaviour(raw=b"not gzip at all", headers={"content-encoding": "gzip"}))
    with pytest.raises(UpstreamMalformed, match="undecodable"):
        await get_adapter("openai").complete(endpoint(openai_up), chat("hi"))
