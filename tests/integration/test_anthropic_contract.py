"""The Anthropic gateway contract (what Claude Code and the Anthropic SDKs send)
through the real app (ASGI) in front of the loopback Anthropic and OpenAI
simulators: system entries in ``messages``, the field policy, betas, structured
outputs, ``message_start`` usage, model aliases, ``count_tokens``, both shapes of
``/v1/models``, ``x-api-key``, session ids on spend rows, and cache tokens metered
on streams at genai-prices' figure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import anthropic
import httpx
import httpx2
import openai
import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from sqlalchemy import select

from tests.support.app import ADMIN_KEY, client_for
from tests.support.secret_scan import ScanningApp
from warden.app import create_app
from tests.support.envelope import assert_envelope
from tests.support.gateway_fakes import sse_events
from tests.support.upstreams import UPSTREAM_KEYS
from warden.services import Services
from warden.store.models import AuditEvent, SpendRow
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def ant_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("anthropic", api_key=UPSTREAM_KEYS["anthropic"]) as up:
        yield up


@pytest.fixture
async def oai_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up:
        yield up


async def add_key(c: httpx.AsyncClient, provider: str, up: UpstreamServer, **extra) -> None:  # noqa: ANN003
    r = await c.post("/api/byok", json={"provider": provider, "label": "main", "base_url": up.base_url,
                                        "api_key": UPSTREAM_KEYS[up.format], **extra})
    assert r.status_code == 201, r.text


@pytest.fixture
async def ant(client: httpx.AsyncClient, ant_up: UpstreamServer) -> httpx.AsyncClient:
    """The admin client of a workspace whose only key is Anthropic's (the catalog's models)."""
    await add_key(client, "anthropic", ant_up)
    return client


@pytest.fixture
async def oai(client: httpx.AsyncClient, oai_up: UpstreamServer) -> httpx.AsyncClient:
    """The admin client of a workspace whose only key is OpenAI's."""
    await add_key(client, "openai", oai_up, models=[{"id": "gpt-4o-mini"}])
    return client


def body(model: str = "anthropic/claude-sonnet-4-5", **extra) -> dict:  # noqa: ANN003
    return {"model": model, "max_tokens": 64, "messages": HI, **extra}


def anthropic_sdk(services: Services) -> anthropic.AsyncAnthropic:
    """The official SDK on the app (it authenticates with ``x-api-key``, not Bearer)."""
    transport = httpx2.ASGITransport(app=ScanningApp(create_app(services=services)))
    return anthropic.AsyncAnthropic(api_key=ADMIN_KEY, base_url="http://warden.test", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport))


async def spend_rows(services: Services) -> list[SpendRow]:
    await services.spend.flush()
    async with services.db.session() as s:
        return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())


# --- system entries, fields, betas -------------------------------------------------


async def test_system_entries_in_messages_fold_into_the_system_prompt_in_order(
        ant: httpx.AsyncClient, ant_up: UpstreamServer) -> None:
    msgs = [{"role": "system", "content": "second"}, {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "third"}]}]
    r = await ant.post("/v1/messages", json=body(system="first", messages=msgs))
    assert r.status_code == 200, r.text
    sent = ant_up.last.body
    assert sent["system"] == "first\n\nsecond\n\nthird"
    assert [m["role"] for m in sent["messages"]] == ["user"]


async def test_system_entries_reach_an_openai_upstream_first(oai: httpx.AsyncClient, oai_up: UpstreamServer) -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    r = await oai.post("/v1/messages", json=body("openai/gpt-4o-mini", messages=msgs))
    assert r.json()["content"][0]["type"] == "text"
    assert [(m["role"], m["content"]) for m in oai_up.last.body["messages"]] == [
        ("system", "be brief"), ("user", "hi")]


async def test_unknown_field_is_a_400_naming_it(ant: httpx.AsyncClient) -> None:
    r = await ant.post("/v1/messages", json=body(frobnicate=True))
    err = assert_envelope(r, 400, "unknown_field")
    assert err["param"] == "frobnicate" and r.json()["type"] == "error"
    assert err["type"] == "invalid_request_error"


async def test_anthropic_only_fields_pass_through_verbatim(ant: httpx.AsyncClient, ant_up: UpstreamServer) -> None:
    extra = {"container": "cntr_1", "top_k": 5, "service_tier": "auto", "inference_geo": "us",
             "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}, "speed": "standard",
             "cache_control": {"type": "ephemeral"}, "metadata": {"user_id": "u-42"}}
    r = await ant.post("/v1/messages", json=body(**extra), headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": "context-management-2025-06-27,claude-code-20250219"})
    assert r.status_code == 200, r.text
    assert "x-warden-dropped-fields" not in r.headers and "x-warden-dropped-betas" not in r.headers
    sent = ant_up.last
    for name, value in extra.items():
        assert sent.body[name] == value, name
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27,claude-code-20250219"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == UPSTREAM_KEYS["anthropic"]  # Warden's key, never the client's


async def test_a_cross_format_target_names_what_it_dropped(oai: httpx.AsyncClient, oai_up: UpstreamServer) -> None:
    r = await oai.post("/v1/messages", json=body("openai/gpt-4o-mini", top_k=3, cache_control={"type": "ephemeral"},
                                                 context_management={"edits": []}),
                       headers={"anthropic-beta": "interleaved-thinking-2025-05-14, structured-outputs-2025-11-13"})
    assert r.status_code == 200 and r.json()["content"][0]["text"]
    assert r.headers["x-warden-dropped-fields"] == "cache_control,context_management,top_k"
    assert r.headers["x-warden-dropped-betas"] == "interleaved-thinking-2025-05-14"  # structured outputs: honoured
    sent = oai_up.last
    assert "top_k" not in sent.body and "anthropic-beta" not in sent.headers


@pytest.mark.parametrize(("field", "value"), [("workspace_id", "wrkspc_1"), ("user_profile_id", "p"),
                                               ("fallbacks", [{"model": "claude-haiku-4-5"}]), ("speed", "fast")])
async def test_fields_about_the_operators_account_or_unmetered_are_refused(
        ant: httpx.AsyncClient, ant_up: UpstreamServer, field: str, value: object) -> None:
    err = assert_envelope(await ant.post("/v1/messages", json=body(**{field: value})), 400, "unsupported_field")
    assert err["param"] == field and field in err["message"]
    assert ant_up.requests == []


async def test_a_field_only_anthropic_serves_is_a_400_without_an_anthropic_deployment(
        oai: httpx.AsyncClient, oai_up: UpstreamServer) -> None:
    r = await oai.post("/v1/messages", json=body("auto", mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]))
    err = assert_envelope(r, 400, "unsupported_field")
    assert err["param"] == "mcp_servers" and "anthropic" in err["message"]
    assert oai_up.requests == []


async def test_required_fields_skip_deployments_of_other_formats(
        client: httpx.AsyncClient, ant_up: UpstreamServer, oai_up: UpstreamServer) -> None:
    await add_key(client, "anthropic", ant_up)
    await add_key(client, "openai", oai_up, models=[{"id": "gpt-4o-mini"}])
    r = await client.post("/api/model-groups", json={"name": "mixed", "members": [
        "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]})
    assert r.status_code == 201
    r = await client.post("/v1/messages", json=body("mixed", container="cntr_9"))
    assert r.status_code == 200, r.text
    assert r.headers["x-warden-provider"] == "anthropic"
    assert oai_up.requests == [] and ant_up.last.body["container"] == "cntr_9"


# --- structured outputs -------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


async def test_output_format_becomes_json_schema_on_openai(oai: httpx.AsyncClient, oai_up: UpstreamServer) -> None:
    oai_up.enqueue(Behaviour(text='{"city": "Oslo"}'))
    r = await oai.post("/v1/messages", json=body("openai/gpt-4o-mini",
                                                 output_format={"type": "json_schema", "schema": SCHEMA}))
    assert json.loads(r.json()["content"][0]["text"]) == {"city": "Oslo"}
    fmt = oai_up.last.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA


async def test_output_format_and_output_config_are_honoured_on_anthropic(
        ant: httpx.AsyncClient, ant_up: UpstreamServer) -> None:
    for fields in ({"output_format": {"type": "json_schema", "schema": SCHEMA}},
                   {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}):
        ant_up.enqueue(Behaviour(tool_calls=[SimToolCall("json_response", {"city": "Oslo"})]))
        r = await ant.post("/v1/messages", json=body(**fields))
        assert json.loads(r.json()["content"][0]["text"]) == {"city": "Oslo"}
        assert ant_up.last.body["tools"][0]["input_schema"] == SCHEMA
    both = body(output_format={"type": "json_schema", "schema": SCHEMA},
                output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert assert_envelope(await ant.post("/v1/messages", json=both), 400, "invalid_request")["param"] == \
        "output_format"


async def test_structured_output_through_the_anthropic_sdk_parse(ant: httpx.AsyncClient, ant_up: UpstreamServer,
                                                                services: Services) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    ant_up.enqueue(Behaviour(tool_calls=[SimToolCall("json_response", {"city": "Bergen"})]))
    sdk = anthropic_sdk(services)
    parsed = await sdk.messages.parse(model="anthropic/claude-sonnet-4-5", max_tokens=64, messages=HI,
                                      output_format=City)
    assert parsed.parsed_output == City(city="Bergen")


# --- streams: message_start usage, cache tokens, cost ------------------------------------


async def test_message_start_carries_the_real_input_and_cache_tokens(
        ant: httpx.AsyncClient, ant_up: UpstreamServer, services: Services) -> None:
    ant_up.enqueue(Behaviour(text="one two three", cache_read_tokens=1000, cache_write_tokens=200))
    system = [{"type": "text", "text": "you are terse", "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "look", "description": "d", "input_schema": {"type": "object"},
              "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]}]
    r = await ant.post("/v1/messages", json=body(stream=True, system=system, tools=tools, messages=msgs),
                       headers={"x-claude-code-session-id": "sess-stream-1"})
    events = sse_events(r.content)
    start = events[0][1]["message"]["usage"]
    assert events[0][0] == "message_start"
    assert (start["input_tokens"], start["cache_read_input_tokens"], start["cache_creation_input_tokens"]) == \
        (5, 1000, 200)  # "you are terse" + "hello there": 5 words
    delta = next(d for n, d in events if n == "message_delta")["usage"]
    assert (delta["input_tokens"], delta["cache_read_input_tokens"], delta["cache_creation_input_tokens"],
            delta["output_tokens"]) == (5, 1000, 200, 3)
    sent = ant_up.last.body  # the markers reached Anthropic where the client put them
    assert sent["system"] == system
    assert sent["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    want = calc_price(GenaiUsage(input_tokens=1205, cache_read_tokens=1000, cache_write_tokens=200,
                                 output_tokens=3), model_ref="claude-sonnet-4-5", provider_id="anthropic").total_price
    assert delta["warden"]["cost_usd"] == str(want)
    row = (await spend_rows(services))[-1]
    assert (row.input_tokens, row.cache_read_tokens, row.cache_write_tokens, row.output_tokens) == (1205, 1000, 200, 3)
    assert Decimal(row.cost_usd) == want and row.session_id == "sess-stream-1"


async def test_message_start_estimates_input_for_other_formats(oai: httpx.AsyncClient) -> None:
    r = await oai.post("/v1/messages", json=body("openai/gpt-4o-mini", stream=True),
                       headers={"anthropic-beta": "claude-code-20250219"})
    assert r.headers["x-warden-dropped-betas"] == "claude-code-20250219"  # streams name them too
    events = sse_events(r.content)
    assert events[0][0] == "message_start" and events[0][1]["message"]["usage"]["input_tokens"] > 0
    assert next(d for n, d in events if n == "message_delta")["usage"]["input_tokens"] == 2  # the real figure


async def test_anthropic_sdk_stream_reports_usage(ant: httpx.AsyncClient, ant_up: UpstreamServer,
                                                  services: Services) -> None:
    ant_up.enqueue(Behaviour(text="alpha beta", cache_read_tokens=7))
    sdk = anthropic_sdk(services)
    async with sdk.messages.stream(model="anthropic/claude-sonnet-4-5", max_tokens=64, messages=HI) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "alpha beta"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (2, 7, 2)


# --- aliases --------------------------------------------------------------------------------


async def test_alias_crud_validation_and_audit(client: httpx.AsyncClient, services: Services) -> None:
    r = await client.post("/api/model-aliases", json={"pattern": "claude-*", "target": "auto"})
    assert r.status_code == 201 and r.json()["target"] == "auto"
    r = await client.put("/api/model-aliases/claude-*", json={"target": "anthropic/*"})
    assert r.json()["target"] == "anthropic/*"
    assert [a["pattern"] for a in (await client.get("/api/model-aliases")).json()] == ["claude-*"]
    assert_envelope(await client.post("/api/model-aliases", json={"pattern": "Auto", "target": "x"}), 409,
                    "model_alias_reserved")
    assert_envelope(await client.put("/api/model-aliases/a%20b", json={"target": "x"}), 422, "validation_error")
    for payload, param in (({"pattern": "a b", "target": "x"}, "pattern"),
                           ({"pattern": "x", "target": "nowhere/*"}, "target"),
                           ({"pattern": "x", "target": "a*b"}, "target")):
        assert_envelope(await client.post("/api/model-aliases", json=payload), 422,
                        "validation_error")["param"] == param
    assert (await client.delete("/api/model-aliases/claude-%2A")).status_code == 204
    assert_envelope(await client.delete("/api/model-aliases/claude-*"), 404, "model_alias_not_found")
    ws = (await services.accounts.workspace_by_name("default")).id
    member = await services.accounts.create_key(ws, "m")
    async with client_for(services, member.key) as c:
        assert (await c.get("/api/model-aliases")).json() == []
        assert_envelope(await c.post("/api/model-aliases", json={"pattern": "p", "target": "auto"}),
                        403, "admin_required")
    async with services.db.session() as s:
        actions = list((await s.execute(select(AuditEvent.action).where(
            AuditEvent.action.like("model_alias.%")).order_by(AuditEvent.seq))).scalars())
    assert actions == ["model_alias.put", "model_alias.put", "model_alias.delete"]


async def test_wildcard_aliases_serve_hard_coded_names(ant: httpx.AsyncClient, ant_up: UpstreamServer) -> None:
    await ant.post("/api/model-groups", json={"name": "cheap", "members": ["anthropic/claude-haiku-4-5"]})
    await ant.post("/api/model-aliases", json={"pattern": "claude-*", "target": "cheap"})
    await ant.post("/api/model-aliases", json={"pattern": "claude-opus-*", "target": "anthropic/claude-opus-4-1"})
    await ant.post("/api/model-aliases", json={"pattern": "claude-opus-4-8", "target": "anthropic/claude-opus-4-5"})
    for asked, served in (("claude-sonnet-9", "claude-haiku-4-5"), ("Claude-Opus-7", "claude-opus-4-1"),
                          ("claude-opus-4-8", "claude-opus-4-5")):
        r = await ant.post("/v1/messages", json=body(asked))
        assert r.status_code == 200, r.text
        assert ant_up.last.body["model"] == served and r.json()["model"] == f"anthropic/{served}"


async def test_unserved_claude_names_go_to_the_best_anthropic_model_by_default(
        ant: httpx.AsyncClient, ant_up: UpstreamServer) -> None:
    r = await ant.post("/v1/messages", json=body("claude-opus-4-8"))
    assert r.status_code == 200 and ant_up.last.body["model"] == "claude-opus-4-5"  # the catalog's best
    r = await ant.post("/v1/messages", json=body("claude-haiku-4-5"))  # a served name is served as itself
    assert ant_up.last.body["model"] == "claude-haiku-4-5"


async def test_unserved_claude_names_without_anthropic_go_to_auto(oai: httpx.AsyncClient,
                                                                  oai_up: UpstreamServer) -> None:
    r = await oai.post("/v1/messages", json=body("claude-opus-4-8"))
    assert r.status_code == 200 and r.headers["x-warden-provider"] == "openai"
    r = await oai.post("/v1/messages", json=body("gpt-nonexistent"))
    assert_envelope(r, 404, "model_not_found")


# --- count_tokens, models, auth, sessions ----------------------------------------------------


async def test_count_tokens_exact_from_anthropic_and_estimated_elsewhere(
        client: httpx.AsyncClient, ant_up: UpstreamServer, oai_up: UpstreamServer, services: Services) -> None:
    await add_key(client, "anthropic", ant_up)
    await add_key(client, "openai", oai_up, models=[{"id": "gpt-4o-mini"}])
    payload = {"model": "anthropic/claude-sonnet-4-5", "system": "be kind", "messages": HI}
    sdk = anthropic_sdk(services)
    raw = await sdk.messages.with_raw_response.count_tokens(**payload)
    assert (await raw.parse()).input_tokens == 4 and raw.headers["x-warden-token-count"] == "exact"
    assert ant_up.last.path == "/v1/messages/count_tokens" and "max_tokens" not in ant_up.last.body
    r = await client.post("/v1/messages/count_tokens", json={**payload, "model": "openai/gpt-4o-mini"})
    assert r.headers["x-warden-token-count"] == "estimate" and r.json()["input_tokens"] > 0
    ant_up.enqueue(Behaviour(status=500))  # an upstream that cannot count: an estimate, labelled
    r = await client.post("/v1/messages/count_tokens", json=payload)
    assert r.headers["x-warden-token-count"] == "estimate" and r.json()["input_tokens"] > 0
    assert await spend_rows(services) == []  # counting is not billed
    err = assert_envelope(await client.post("/v1/messages/count_tokens", json={**payload, "model": "nope"}),
                          404, "model_not_found")
    assert err["type"] == "not_found_error"


async def test_models_in_both_shapes(ant: httpx.AsyncClient, services: Services) -> None:
    await ant.post("/api/model-aliases", json={"pattern": "claude-opus-4-8", "target": "auto"})
    await ant.post("/api/model-aliases", json={"pattern": "gpt-5*", "target": "auto"})
    oai = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url="http://warden.test/v1", http_client=ant, max_retries=0)
    ids = [m.id async for m in oai.models.list()]
    assert ids[:2] == ["auto", "claude-opus-4-8"] and "anthropic/claude-sonnet-4-5" in ids and "gpt-5*" not in ids
    one = await oai.models.retrieve("anthropic/claude-sonnet-4-5")
    assert (one.id, one.object, one.owned_by) == ("anthropic/claude-sonnet-4-5", "model", "anthropic")
    assert (await oai.models.retrieve("gpt-5.5-codex")).id == "gpt-5.5-codex"  # served by the wildcard
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nothing-here")
    sdk = anthropic_sdk(services)
    page = await sdk.models.list()
    assert [m.id for m in page.data] == ids and page.data[0].type == "model"
    assert (await sdk.models.retrieve("claude-opus-4-8")).display_name == "claude-opus-4-8"


async def test_x_api_key_is_accepted(services: Services, ant_up: UpstreamServer, ant: httpx.AsyncClient) -> None:
    sdk = anthropic_sdk(services)  # x-api-key only
    async with client_for(services, key=None) as bare:
        msg = await sdk.messages.create(model="anthropic/claude-sonnet-4-5", max_tokens=64, messages=HI)
        assert msg.content[0].type == "text"
        r = await bare.post("/v1/messages", json=body(), headers={"x-api-key": "wk-wrong-0123456789abcdef"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_session_ids_on_spend_rows_and_usage(ant: httpx.AsyncClient, services: Services) -> None:
    for session in ("sess-a", "sess-a", "sess-b", None):
        headers = {"x-claude-code-session-id": session} if session else {}
        assert (await ant.post("/v1/messages", json=body(), headers=headers)).status_code == 200
    r = await ant.post("/v1/messages", json=body("nope"), headers={"x-claude-code-session-id": "sess-b"})
    assert r.status_code == 404
    assert [row.session_id for row in await spend_rows(services)] == ["sess-a", "sess-a", "sess-b", None]
    usage = (await ant.get("/api/usage", params={"group_by": "session"})).json()
    assert usage["group_by"] == "session"
    assert {row["group"]: row["requests"] for row in usage["rows"]} == {"sess-a": 2, "sess-b": 1, None: 1}
