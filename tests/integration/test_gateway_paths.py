"""The gateway in-process (as the agent runtime uses it), through its rarer paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from warden.errors import ServiceUnavailable
from warden.gateway.errors import RateLimited, Timeout
from warden.gateway.context import CallContext
from warden.gateway.context import RouteOptions
from warden.gateway.types import ChatRequest, ErrorEvent, FinishEvent, Message, TextDelta
from warden.services import Services
from warden.state import create_state
from warden.store.models import SpendRow
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def ws(services: Services, up: UpstreamServer) -> str:
    ws_id = (await services.accounts.workspace_by_name("default")).id
    for label in ("a", "b"):
        await services.byok.create(ws_id, {"provider": "openai", "label": label,
                                           "api_key": f"sk-up-{label}-0123456789",
                                           "base_url": up.base_url,
                                           "models": [{"id": "gpt-4o-mini"}]}, actor="test")
    return ws_id


def request(model: str = "openai/gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.text("user", "hello there")])


def ctx(ws: str, **options) -> CallContext:
    return CallContext(ws, None, "req-test", RouteOptions(**options))


async def statuses(services: Services) -> list[str]:
    await services.spend.flush()
    async with services.db.session() as s:
        return list((await s.execute(select(SpendRow.status).order_by(SpendRow.id))).scalars())


async def test_state_store_down_does_not_stop_traffic(services: Services, ws: str) -> None:
    services.gateway.state = create_state("redis://127.0.0.1:1/0")
    try:
        resp, info = await services.gateway.complete(request(), ctx(ws))
    finally:
        await services.gateway.state.close()
    assert resp.text == DEFAULT_TEXT and info.attempts == 1


async def test_all_breakers_open_is_503(services: Services, ws: str, up: UpstreamServer) -> None:
    plan = await services.gateway.plan(request(), ctx(ws))
    for step in plan.steps:
        for _ in range(services.settings.breaker_failures):
            await services.state.breaker_record(step.deployment.id, False)
    with pytest.raises(ServiceUnavailable) as exc:
        await services.gateway.complete(request(), ctx(ws))
    assert exc.value.code == "no_available_deployment" and exc.value.status == 503
    assert up.requests == []


async def test_long_retry_after_moves_on_at_once(services: Services, ws: str, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(status=429, retry_after=120))
    resp, info = await services.gateway.complete(request(), ctx(ws))
    assert info.attempts == 2 and resp.text == DEFAULT_TEXT
    # The two attempts went to the two credentials, not twice to the first.
    assert len({r.headers["authorization"] for r in up.requests}) == 2 == len(up.requests)
    up.enqueue(*[Behaviour(status=429, retry_after=120)] * 2)
    with pytest.raises(RateLimited):
        await services.gateway.complete(request(), ctx(ws))
    assert (await statuses(services))[-1] == "error:upstream_rate_limited"


async def test_deadline_bounds_every_attempt(services: Services, ws: str, up: UpstreamServer) -> None:
    services.gateway.config = replace(services.gateway.config, deadline_s=0.3)
    up.enqueue(Behaviour(delay=2), Behaviour(delay=2))
    with pytest.raises(Timeout):
        await services.gateway.complete(request(), ctx(ws))


async def test_stream_error_after_first_token_is_an_event(services: Services, ws: str,
                                                          up: UpstreamServer) -> None:
    up.enqueue(Behaviour(stream_error="server_error", fault_after=3))
    stream = await services.gateway.open_stream(request(), ctx(ws))
    events = [e async for e in stream]
    await stream.aclose()
    assert isinstance(events[0], TextDelta) and isinstance(events[-1], ErrorEvent)
    assert not any(isinstance(e, FinishEvent) for e in events)
    assert stream.info.attempts == 1
    assert (await statuses(services))[-1].startswith("stream_error:")


async def test_stream_closed_early_is_cancelled_and_priced_as_streamed(services: Services, ws: str,
                                                                       up: UpstreamServer) -> None:
    up.enqueue(Behaviour(token_delay=0.05))
    stream = await services.gateway.open_stream(request(), ctx(ws))
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()
    await stream.aclose()  # idempotent
    usage = stream.info.usage  # no provider usage yet: the prompt estimate, the output seen
    assert usage.input_tokens > 0 and usage.output_tokens == 2  # "Hello " is 6 characters
    assert stream.info.cost_usd == services.gateway.catalog.cost("openai", "gpt-4o-mini", usage) > 0
    assert (await statuses(services)) == ["cancelled"]


async def test_unknown_model_name_at_a_known_provider_is_callable(services: Services, ws: str,
                                                                  up: UpstreamServer) -> None:
    resp, info = await services.gateway.complete(request("openai/brand-new-model"), ctx(ws))
    assert info.model == "brand-new-model" and info.cost_usd is None
    assert up.last.body["model"] == "brand-new-model"
    models = [m["id"] for m in await services.gateway.list_models(ws)]
    assert models == ["auto", "openai/gpt-4o-mini"]
