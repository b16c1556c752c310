"""The Responses API end to end: the official ``openai`` SDK (create, stream,
parse, stored responses), the ``openai-agents`` SDK, ``langchain-openai`` and
``pydantic-ai`` -> a live Warden -> loopback providers. Each client runs in
``offline-run`` (``tests/e2e/clients/``), one process per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import genai_prices
import pytest
from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.offline import Client, warden_client
from tests.support.upstreams import add_credential
from warden.store.models import SpendRow
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall

OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
CREATE, RETRIEVE, DELETE, ITEMS = ("responses.create", "responses.retrieve", "responses.delete",
                                   "responses.input_items.list")


@pytest.fixture
def sdk(live) -> Iterator[Client]:
    with warden_client("openai_sdk", live, ADMIN_KEY) as client:
        yield client


def spend_rows(live) -> list[SpendRow]:
    async def read() -> list[SpendRow]:
        await live.services.spend.flush()
        async with live.services.db.session() as s:
            return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())

    return live.call(read())


def test_create_with_exact_cost_store_retrieve_and_delete(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(cache_read_tokens=3))
    raw = sdk.call("request", path=CREATE, raw=True,
                   model="openai/gpt-5-mini", input="Say hello to Warden", instructions="Be brief.",
                   metadata={"ticket": "42"}, max_output_tokens=64, reasoning={"effort": "low"})
    resp = raw["body"]
    assert resp["output_text"] == DEFAULT_TEXT and resp["status"] == "completed"
    assert resp["id"].startswith("resp_") and resp["metadata"] == {"ticket": "42"}
    assert resp["model"] == "openai/gpt-5-mini" and resp["instructions"] == "Be brief."
    # input = 4 words + "Be brief." (2) + 3 cached, as the simulator counts
    assert (resp["usage"]["input_tokens"], resp["usage"]["output_tokens"]) == (9, OUTPUT_TOKENS)
    assert resp["usage"]["input_tokens_details"]["cached_tokens"] == 3
    usage = genai_prices.Usage(input_tokens=9, output_tokens=OUTPUT_TOKENS, cache_read_tokens=3)
    cost = genai_prices.calc_price(usage, "gpt-5-mini", provider_id="openai").total_price
    assert Decimal(raw["headers"]["x-warden-cost-usd"]) == cost > 0
    assert resp["usage"]["warden"]["cost_usd"] == str(cost)
    sent = openai_up.last.body  # what the provider got: the internal request, in its own format
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 64 and sent["reasoning_effort"] == "low"
    row = spend_rows(live)[-1]
    assert (row.provider, row.model, row.status, row.cost_usd) == ("openai", "gpt-5-mini", "ok", cost)
    # Stored (the default): read back, listed, continued, deleted.
    assert sdk.call("request", path=RETRIEVE, response_id=resp["id"])["output_text"] == DEFAULT_TEXT
    items = sdk.call("request", path=ITEMS, response_id=resp["id"])
    assert [i["type"] for i in items["data"]] == ["message"]
    assert items["data"][0]["content"][0]["text"] == "Say hello to Warden"
    follow = sdk.call("request", path=CREATE, model="openai/gpt-4o-mini", input="And again",
                      previous_response_id=resp["id"])
    roles = [(m["role"], m["content"]) for m in openai_up.last.body["messages"]]
    assert roles == [("user", "Say hello to Warden"), ("assistant", DEFAULT_TEXT), ("user", "And again")]
    listed = sdk.call("request", path=ITEMS, response_id=follow["id"], order="asc")
    assert [i["type"] for i in listed["data"]] == ["message", "message", "message"]
    sdk.call("request", path=DELETE, response_id=resp["id"])
    exc = sdk.raises("NotFoundError", "request", path=RETRIEVE, response_id=resp["id"])
    assert exc.body["code"] == "response_not_found"
    exc = sdk.raises("NotFoundError", "request", path=CREATE, model="openai/gpt-4o-mini", input="x",
                     previous_response_id=resp["id"])
    assert exc.body["param"] == "previous_response_id"
    # store=false keeps nothing.
    unstored = sdk.call("request", path=CREATE, model="openai/gpt-4o-mini", input="x", store=False)
    sdk.raises("NotFoundError", "request", path=RETRIEVE, response_id=unstored["id"])


def test_stored_responses_never_cross_workspaces(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    resp = sdk.call("request", path=CREATE, model="openai/gpt-4o-mini", input="secret plan")
    ws = admin.post("/api/workspaces", json={"name": "acme"}).json()["id"]
    other = live.call(live.services.accounts.create_key(ws, "acme-admin", "admin")).key
    for path in (RETRIEVE, ITEMS, DELETE):
        sdk.raises("NotFoundError", "request", path=path, key=other, response_id=resp["id"])
    sdk.raises("NotFoundError", "request", path=CREATE, key=other, model="auto", input="x",
               previous_response_id=resp["id"])
    # still ours
    assert sdk.call("request", path=RETRIEVE, response_id=resp["id"])["output_text"] == DEFAULT_TEXT


def test_function_tools_round_trip(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    tools = [{"type": "function", "name": "weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    openai_up.enqueue(Behaviour(tool_calls=[SimToolCall("weather", {"city": "Oslo"})]))
    first = sdk.call("request", path=CREATE, model="openai/gpt-4o-mini", input="Weather in Oslo?",
                     tools=tools, tool_choice={"type": "function", "name": "weather"},
                     parallel_tool_calls=False)
    call = first["output"][0]
    assert call["type"] == "function_call" and call["name"] == "weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    sent = openai_up.last.body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert sent["parallel_tool_calls"] is False and sent["tools"][0]["function"]["name"] == "weather"
    # The tool's result goes back as items (no stored state needed: store=false style).
    second = sdk.call("request", path=CREATE, model="openai/gpt-4o-mini", tools=tools, input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "weather",
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}])
    assert second["output_text"] == DEFAULT_TEXT
    msgs = openai_up.last.body["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == call["call_id"]
    assert msgs[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny, 21 C"}


def test_stream_events_and_final_response(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    out = sdk.call("responses_stream", model="openai/gpt-4o-mini", input="stream please")
    events, final = out["events"], out["final"]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == DEFAULT_TEXT
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert final["output_text"] == DEFAULT_TEXT and final["usage"]["output_tokens"] == OUTPUT_TOKENS
    cost = Decimal(final["usage"]["warden"]["cost_usd"])
    assert cost > 0 and spend_rows(live)[-1].cost_usd == cost
    # Stored before the last event left: retrievable at once.
    assert sdk.call("request", path=RETRIEVE, response_id=final["id"])["output_text"] == DEFAULT_TEXT


def test_stream_that_stalls_before_its_first_token_fails_over(live, admin, openai_up, anthropic_up,
                                                              sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    admin.put("/api/model-groups/coders",
              json={"members": ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]})
    # Headers at once, then silence past the first-event timeout (1 s here), on each try.
    openai_up.enqueue(Behaviour(first_event_delay=3), Behaviour(first_event_delay=3))
    # (The cost guard would keep a fallback 8x the price out of the plan: the warden options widen it.)
    out = sdk.call("responses_stream", model="coders", input="x",
                   extra_body={"warden": {"max_fallback_cost_factor": 20}})
    text = "".join(e["delta"] for e in out["events"] if e["type"] == "response.output_text.delta")
    assert text == DEFAULT_TEXT and out["final"]["model"] == "anthropic/claude-haiku-4-5"
    assert spend_rows(live)[-1].provider == "anthropic"


def test_error_after_the_first_byte_is_typed(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(drop_after=3))
    events = sdk.call("responses_stream_events", model="openai/gpt-4o-mini", input="x")
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "upstream_unreachable" and events[-1]["response"]["status"] == "failed"
    assert spend_rows(live)[-1].status.startswith("stream_error")


def test_parse_with_a_json_schema(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(text='{"name": "Oslo", "population": 709000}'))
    out = sdk.call("responses_parse_city", model="openai/gpt-4o-mini", input="Oslo?")
    assert out == {"type": "City", "parsed": {"name": "Oslo", "population": 709000}}
    fmt = openai_up.last.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"
    assert fmt["json_schema"]["schema"]["required"] == ["name", "population"]


def test_hosted_tools_budgets_and_model_auto(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    exc = sdk.raises("BadRequestError", "request", path=CREATE, model="auto", input="news?",
                     tools=[{"type": "web_search"}])
    assert exc.body["code"] == "unsupported_tool" and "'web_search'" in exc.body["message"]
    assert exc.body["param"] == "tools.0.type" and openai_up.requests == []
    auto = sdk.call("request", path=CREATE, raw=True, model="auto", input="hi",
                    extra_body={"warden": {"prefer": "cost"}})
    assert auto["headers"]["x-warden-provider"] == "openai" and auto["body"]["output_text"] == DEFAULT_TEXT
    r = admin.put("/api/budgets", json={"scope": "workspace", "period": "month", "limit_usd": "0.000001"})
    assert r.status_code == 200, r.text
    exc = sdk.raises("RateLimitError", "request", path=CREATE, model="openai/gpt-4o-mini", input="hi",
                     max_output_tokens=4000)
    assert exc.body["code"] == "budget_exceeded"


WEATHER = [Behaviour(tool_calls=[SimToolCall("get_weather", {"city": "Oslo"})]),
           Behaviour(text="It is sunny in Oslo.")]


def tool_result(up) -> str:
    """The tool result the client sent back on its second request."""
    return next(m for m in up.last.body["messages"] if m["role"] == "tool")["content"]


def test_openai_agents_sdk_default_responses_model_with_a_function_tool(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(*WEATHER)
    with warden_client("agent_frameworks", live, ADMIN_KEY) as client:
        assert client.call("openai_agents_weather", question="Weather in Oslo?") == "It is sunny in Oslo."
    assert tool_result(openai_up) == "sunny in Oslo"
    assert openai_up.requests[-2].body["tools"][0]["function"]["name"] == "get_weather"
    assert [r.status for r in spend_rows(live)] == ["ok", "ok"]


@pytest.mark.parametrize("responses_api", [False, True])
def test_langchain_openai_invoke_stream_and_tools(live, admin, openai_up, responses_api: bool) -> None:
    add_credential(admin, "openai", openai_up)
    opts = {"kind": "openai", "responses_api": responses_api}
    with warden_client("langchain_clients", live, ADMIN_KEY) as chat:
        assert chat.call("invoke", prompt="Say hello", **opts) == DEFAULT_TEXT
        assert "".join(chat.call("stream", prompt="Say hello", **opts)["texts"]) == DEFAULT_TEXT
        openai_up.enqueue(*WEATHER)
        out = chat.call("weather_tool_round_trip", question="Weather in Oslo?", **opts)
    assert (out["call"]["name"], out["call"]["args"]) == ("get_weather", {"city": "Oslo"})
    assert out["answer"] == "It is sunny in Oslo." and tool_result(openai_up) == "sunny in Oslo"
    assert len(spend_rows(live)) == 4


def test_pydantic_ai_responses_model_with_a_tool(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(*WEATHER)
    with warden_client("agent_frameworks", live, ADMIN_KEY) as client:
        output = client.call("pydantic_ai_weather", question="Weather in Oslo?")
    assert output == "It is sunny in Oslo." and tool_result(openai_up) == "sunny in Oslo"
    assert openai_up.last.body["messages"][0] == {"role": "system", "content": "Answer with the tool."}
    assert [r.status for r in spend_rows(live)] == ["ok", "ok"]
