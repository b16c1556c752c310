"""The access log: one JSON line a request naming the route template and, for a
gateway call, provider, model, attempts, tokens, cost and the request id."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import ADMIN_KEY, client_for
from starlette.routing import Route

from warden.api import middleware
from warden.api.middleware import RequestContextMiddleware
from warden.config import load_settings
from warden.logs import make_handler
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def logged(data_dir: Path) -> AsyncIterator[Services]:
    svc = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=True))
    yield svc
    await svc.close()


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def client(logged: Services, up: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    ws = (await logged.accounts.workspace_by_name("default")).id
    await logged.byok.create(ws, {"provider": "openai", "label": "a", "api_key": "sk-up-a-0123456789",
                                  "base_url": up.base_url,
                                  "models": [{"id": "gpt-4o-mini"}, {"id": "gpt-5-nano"}]}, actor="test")
    async with client_for(logged) as c:
        yield c


def access(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name == "warden.access"]
    assert len(records) == 1, [r.getMessage() for r in records]
    return records[0]


def line(record: logging.LogRecord) -> dict:
    """The record as the server's handler writes it: exactly one JSON line."""
    text = make_handler().format(record)
    assert "\n" not in text
    return json.loads(text)


CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


async def test_gateway_call_is_one_line_with_route_model_tokens_and_cost(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    out = line(access(caplog))
    assert out["message"].startswith("POST /v1/chat/completions 200 ")
    assert out["route"] == "/v1/chat/completions" and out["method"] == "POST" and out["status"] == 200
    assert out["request_id"] == r.headers["x-request-id"]
    body = r.json()
    assert (out["provider"], out["model"], out["attempts"]) == ("openai", "gpt-4o-mini", 1)
    assert out["input_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert out["output_tokens"] == body["usage"]["completion_tokens"] > 0
    assert out["cost_usd"] == r.headers["x-warden-cost-usd"]
    assert "fallback" not in out and out["ms"] >= 0


async def test_streamed_call_logs_what_the_stream_used(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/chat/completions", json={
            **CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and "data: [DONE]" in r.text
    out = line(access(caplog))
    assert out["route"] == "/v1/chat/completions" and out["output_tokens"] > 0
    assert out["cost_usd"] is not None and out["attempts"] == 1


async def test_failed_gateway_call_says_how_many_attempts(
        client: httpx.AsyncClient, up: UpstreamServer, caplog: pytest.LogCaptureFixture) -> None:
    await up.go_down()
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502 and r.json()["error"]["attempts"] == 1
    assert r.headers["x-warden-attempts"] == "1"
    out = line(access(caplog))
    assert out["route"] == "/v1/chat/completions" and out["status"] == 502
    assert out["attempts"] == 1 and "provider" not in out


async def test_anthropic_route_and_api_routes_are_named(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/messages", json={
            "model": "openai/gpt-4o-mini", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200
    assert line(access(caplog))["route"] == "/v1/messages"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.get("/v1/models")
    out = line(access(caplog))
    assert r.status_code == 200 and out["route"] == "/v1/models" and "model" not in out


async def test_unmatched_request_logs_its_path_redacted(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.get("/no/such/sk-proj-abcdefghijklmnopqrstuvwxyz")
    assert r.status_code == 404
    out = line(access(caplog))
    assert out["route"] is None and out["message"].startswith("GET unmatched 404")
    assert out["path"].startswith("/no/such/") and "abcdefghijklmnop" not in out["path"]


async def test_fallback_is_logged_with_its_cost_factor(
        client: httpx.AsyncClient, up: UpstreamServer, caplog: pytest.LogCaptureFixture) -> None:
    up.enqueue(Behaviour(status=400, error_type="context_length_exceeded"))
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/chat/completions", json={
            **CHAT, "model": "openai/gpt-5-nano", "warden": {"fallbacks": ["openai/gpt-4o-mini"]}})
    assert r.status_code == 200
    assert r.headers["x-warden-model"] == "gpt-4o-mini" and r.headers["x-warden-fallback"] == "1"
    factor = float(r.headers["x-warden-fallback-cost-factor"])
    assert 1 < factor < 4
    out = line(access(caplog))
    assert out["fallback"] is True and out["fallback_cost_factor"] == pytest.approx(factor, rel=0.01)
    assert out["attempts"] == 2 and out["model"] == "gpt-4o-mini"
    # A second request on the same route is named from the middleware's cache.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warden.access"):
        r = await client.post("/v1/chat/completions", json=CHAT)
    out = line(access(caplog))
    assert out["route"] == "/v1/chat/completions" and "fallback" not in out


def test_templates_of_plain_routes_are_cached_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    async def endpoint(request):  # pragma: no cover - never called
        return None

    class App:
        routes = [Route("/plain/{id}", endpoint)]

    mw = RequestContextMiddleware(App(), max_body_bytes=1)
    assert mw._template({"endpoint": endpoint, "app": App()}) == "/plain/{id}"
    assert mw._template({"endpoint": endpoint}) == "/plain/{id}"  # cached
    assert mw._template({"endpoint": object(), "app": App()}) is None  # not among the routes
    monkeypatch.setattr(middleware, "_METRIC_KEYS_LIMIT", 0)
    fresh = RequestContextMiddleware(App(), max_body_bytes=1)
    assert fresh._template({"endpoint": endpoint, "app": App()}) == "/plain/{id}"
    assert fresh._templates == {}  # full: looked up, not kept


def test_a_fallback_that_is_not_pricier_has_no_factor() -> None:
    from warden.gateway.context import CallContext
    from warden.gateway.metering import CallInfo

    call = CallContext("w", None, "r")
    assert middleware._gateway_fields(call) == {"attempts": 0}
    call.served = CallInfo("openai", "gpt-4o-mini", "c:gpt-4o-mini", "c", 2, None, 0.1, fallback=True)
    fields = middleware._gateway_fields(call)
    assert fields["fallback"] is True and "fallback_cost_factor" not in fields
    assert fields["cost_usd"] is None and fields["attempts"] == 2
