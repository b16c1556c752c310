"""Malformed gateway requests are refused at the edge, naming the field, and never
reach a provider (each of these used to be forwarded upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.services import Services
from warden.testing.upstream import UpstreamServer

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "x" * 10_000, "parameters": {"type": "object"}}}


def image(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


OPENAI_CASES = [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"n": 0}, "n"),
    ({"seed": 2**64}, "seed"),
    ({"logit_bias": {"not-a-token": 5}}, "logit_bias.not-a-token"),
    ({"logit_bias": {"50256": 1000}}, "logit_bias.50256"),
    ({"tools": [TOOL]}, "tools.0.function.name"),
    ({"messages": []}, "messages"),
    ({"messages": image("file:///etc/passwd")}, "messages.0.content.1.image_url.url"),
    ({"messages": image("data:image/png;base64,@@not base64@@")}, "messages.0.content.1.image_url.url"),
    ({"messages": image("data:image/png,raw")}, "messages.0.content.1.image_url.url"),
]

ANTHROPIC_CASES = [
    ({"messages": []}, "messages"),
    ({"temperature": 1.5}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": -4}}, "thinking.budget_tokens"),
    ({"tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}, "tools.0.name"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}]}]},
     "messages.0.content.0.source.data"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "file:///etc/shadow"}}]}]},
     "messages.0.content.0.source.url"),
]


@pytest.fixture
async def upstreams(services: Services) -> AsyncIterator[dict[str, UpstreamServer]]:
    async with UpstreamServer("openai") as oai, UpstreamServer("anthropic") as ant:
        ws_id = (await services.accounts.workspace_by_name("default")).id
        await services.byok.create(ws_id, {"provider": "openai", "label": "o", "api_key": "sk-up-0123456789",
                                           "base_url": oai.base_url}, actor="test")
        await services.byok.create(ws_id, {"provider": "anthropic", "label": "a",
                                           "api_key": "sk-ant-up-0123456789", "base_url": ant.base_url},
                                   actor="test")
        yield {"openai": oai, "anthropic": ant}


@pytest.mark.parametrize(("change", "field"), OPENAI_CASES)
async def test_chat_completions_refuses_before_any_upstream_call(
        services: Services, upstreams: dict[str, UpstreamServer], change: dict, field: str) -> None:
    async with client_for(services) as c:
        r = await c.post("/v1/chat/completions", json={"model": "openai/gpt-4o-mini", "messages": USER, **change})
    err = assert_envelope(r, 422, "validation_error")
    assert err["param"] == field and err["message"].startswith(f"{field}: ")
    assert not upstreams["openai"].requests and not upstreams["anthropic"].requests


@pytest.mark.parametrize(("change", "field"), ANTHROPIC_CASES)
async def test_messages_refuses_before_any_upstream_call(
        services: Services, upstreams: dict[str, UpstreamServer], change: dict, field: str) -> None:
    async with client_for(services) as c:
        r = await c.post("/v1/messages", json={"model": "anthropic/claude-haiku-4-5", "max_tokens": 50,
                                               "messages": USER, **change})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["param"] == field
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["request_id"]
    assert not upstreams["openai"].requests and not upstreams["anthropic"].requests


async def test_well_formed_neighbours_still_pass(services: Services,
                                                 upstreams: dict[str, UpstreamServer]) -> None:
    """The bounds sit at the edges of what providers accept, not inside them."""
    async with client_for(services) as c:
        r = await c.post("/v1/chat/completions", json={
            "model": "openai/gpt-4o-mini", "temperature": 2, "top_p": 1, "n": 1, "seed": -(2**63),
            "logit_bias": {"50256": -100}, "stream": False,
            "messages": image("data:image/png;base64,iVBORw0KGgo="),
            "tools": [{"type": "function", "function": {"name": "get_weather-v2", "parameters": {}}}]})
        assert r.status_code == 200, r.text
        r = await c.post("/v1/messages", json={
            "model": "anthropic/claude-haiku-4-5", "max_tokens": 2048, "temperature": 1,
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": USER})
        assert r.status_code == 200, r.text
    assert len(upstreams["openai"].requests) == 1 and len(upstreams["anthropic"].requests) == 1
    assert isinstance(r, httpx.Response) and r.json()["type"] == "message"
