"""The Responses API end to end: the official ``openai`` SDK (create, stream,
parse, stored responses), the ``openai-agents`` SDK, ``langchain-openai`` and
``pydantic-ai`` -> a live Warden -> loopback providers."""

from __future__ import annotations

import json
from decimal import Decimal

import genai_prices
import openai
import pytest
from pydantic import BaseModel
from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.upstreams import add_credential
from warden.store.models import SpendRow
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall

OUTPUT_TOKENS = len(DEFAULT_TEXT.split())


def oai(live, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def spend_rows(live) -> list[SpendRow]:
    async def read() -> list[SpendRow]:
        await live.services.spend.flush()
        async with live.services.db.session() as s:
            return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())

    return live.call(read())


def test_create_with_exact_cost_store_retrieve_and_delete(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    client = oai(live)
    openai_up.enqueue(Behaviour(cache_read_tokens=3))
    raw = client.responses.with_raw_response.create(
        model="openai/gpt-5-mini", input="Say hello to Warden", instructions="Be brief.",
        metadata={"ticket": "42"}, max_output_tokens=64, reasoning={"effort": "low"})
    resp = raw.parse()
    assert resp.output_text == DEFAULT_TEXT and resp.status == "completed"
    assert resp.id.startswith("resp_") and resp.metadata == {"ticket": "42"}
    assert resp.model == "openai/gpt-5-mini" and resp.instructions == "Be brief."
    # input = 4 words + "Be brief." (2) + 3 cached, as the simulator counts
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (9, OUTPUT_TOKENS)
    assert resp.usage.input_tokens_details.cached_tokens == 3
    usage = genai_prices.Usage(input_tokens=9, output_tokens=OUTPUT_TOKENS, cache_read_tokens=3)
    cost = genai_prices.calc_price(usage, "gpt-5-mini", provider_id="openai").total_price
    assert Decimal(raw.headers["x-warden-cost-usd"]) == cost > 0
    assert resp.usage.model_extra["warden"]["cost_usd"] == str(cost)
    sent = openai_up.last.body  # what the provider got: the internal request, in its own format
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 64 and sent["reasoning_effort"] == "low"
    row = spend_rows(live)[-1]
    assert (row.provider, row.model, row.status, row.cost_usd) == ("openai", "gpt-5-mini", "ok", cost)
    # Stored (the default): read back, listed, continued, deleted.
    assert client.responses.retrieve(resp.id).output_text == DEFAULT_TEXT
    items = client.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "Say hello to Warden"
    follow = client.responses.create(model="openai/gpt-4o-mini", input="And again",
                                     previous_response_id=resp.id)
    roles = [(m["role"], m["content"]) for m in openai_up.last.body["messages"]]
    assert roles == [("user", "Say hello to Warden"), ("assistant", DEFAULT_TEXT), ("user", "And again")]
    listed = client.responses.input_items.list(follow.id, order="asc")
    assert [i.type for i in listed.data] == ["message", "message", "message"]
    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.retrieve(resp.id)
    assert exc.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="openai/gpt-4o-mini", input="x", previous_response_id=resp.id)
    assert exc.value.body["param"] == "previous_response_id"
    # store=false keeps nothing.
    unstored = client.responses.create(model="openai/gpt-4o-mini", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_stored_responses_never_cross_workspaces(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    resp = oai(live).responses.create(model="openai/gpt-4o-mini", input="secret plan")
    ws = admin.post("/api/workspaces", json={"name": "acme"}).json()["id"]
    other = live.call(live.services.accounts.create_key(ws, "acme-admin", "admin")).key
    theirs = oai(live, other)
    for attempt in (lambda: theirs.responses.retrieve(resp.id),
                    lambda: theirs.responses.input_items.list(resp.id),
                    lambda: theirs.responses.delete(resp.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="auto", input="x", previous_response_id=resp.id)
    assert oai(live).responses.retrieve(resp.id).output_text == DEFAULT_TEXT  # still ours


def test_function_tools_round_trip(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    client = oai(live)
    tools = [{"type": "function", "name": "weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    openai_up.enqueue(Behaviour(tool_calls=[SimToolCall("weather", {"city": "Oslo"})]))
    first = client.responses.create(model="openai/gpt-4o-mini", input="Weather in Oslo?", tools=tools,
                                    tool_choice={"type": "function", "name": "weather"},
                                    parallel_tool_calls=False)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    sent = openai_up.last.body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert sent["parallel_tool_calls"] is False and sent["tools"][0]["function"]["name"] == "weather"
    # The tool's result goes back as items (no stored state needed: store=false style).
    second = client.responses.create(model="openai/gpt-4o-mini", tools=tools, input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": "weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert second.output_text == DEFAULT_TEXT
    msgs = openai_up.last.body["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == call.call_id
    assert msgs[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


def test_stream_events_and_final_response(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    with oai(live).responses.stream(model="openai/gpt-4o-mini", input="stream please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == DEFAULT_TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == DEFAULT_TEXT and final.usage.output_tokens == OUTPUT_TOKENS
    cost = Decimal(final.usage.model_extra["warden"]["cost_usd"])
    assert cost > 0 and spend_rows(live)[-1].cost_usd == cost
    # Stored before the last event left: retrievable at once.
    assert oai(live).responses.retrieve(final.id).output_text == DEFAULT_TEXT


def test_stream_that_stalls_before_its_first_token_fails_over(live, admin, openai_up, anthropic_up) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    admin.put("/api/model-groups/coders", json={"members": ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]})
    # Headers at once, then silence past the first-event timeout (1 s here), on each try.
    openai_up.enqueue(Behaviour(first_event_delay=3), Behaviour(first_event_delay=3))
    # (The cost guard would keep a fallback 8x the price out of the plan: the warden options widen it.)
    with oai(live).responses.stream(model="coders", input="x",
                                    extra_body={"warden": {"max_fallback_cost_factor": 20}}) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == DEFAULT_TEXT and final.model == "anthropic/claude-haiku-4-5"
    assert spend_rows(live)[-1].provider == "anthropic"


def test_error_after_the_first_byte_is_typed(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(drop_after=3))
    with oai(live).responses.stream(model="openai/gpt-4o-mini", input="x") as stream:
        events = list(stream)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "upstream_unreachable" and events[-1].response.status == "failed"
    assert spend_rows(live)[-1].status.startswith("stream_error")


def test_parse_with_a_json_schema(live, admin, openai_up) -> None:
    class City(BaseModel):
        name: str
        population: int

    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(text='{"name": "Oslo", "population": 709000}'))
    parsed = oai(live).responses.parse(model="openai/gpt-4o-mini", input="Oslo?", text_format=City)
    assert parsed.output_parsed == City(name="Oslo", population=709000)
    fmt = openai_up.last.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"
    assert fmt["json_schema"]["schema"]["required"] == ["name", "population"]


def test_hosted_tools_budgets_and_model_auto(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    client = oai(live)
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="auto", input="news?", tools=[{"type": "web_search"}])
    assert exc.value.body["code"] == "unsupported_tool" and "'web_search'" in exc.value.body["message"]
    assert exc.value.body["param"] == "tools.0.type" and openai_up.requests == []
    auto = client.responses.with_raw_response.create(model="auto", input="hi",
                                                     extra_body={"warden": {"prefer": "cost"}})
    assert auto.headers["x-warden-provider"] == "openai" and auto.parse().output_text == DEFAULT_TEXT
    r = admin.put("/api/budgets", json={"scope": "workspace", "period": "month", "limit_usd": "0.000001"})
    assert r.status_code == 200, r.text
    with pytest.raises(openai.RateLimitError) as exc:
        client.responses.create(model="openai/gpt-4o-mini", input="hi", max_output_tokens=4000)
    assert exc.value.body["code"] == "budget_exceeded"


WEATHER = [Behaviour(tool_calls=[SimToolCall("get_weather", {"city": "Oslo"})]),
           Behaviour(text="It is sunny in Oslo.")]


def tool_result(up) -> str:
    """The tool result the client sent back on its second request."""
    return next(m for m in up.last.body["messages"] if m["role"] == "tool")["content"]


def test_openai_agents_sdk_default_responses_model_with_a_function_tool(live, admin, openai_up) -> None:
    import agents

    add_credential(admin, "openai", openai_up)
    agents.set_tracing_disabled(True)  # its traces would go to OpenAI
    agents.set_default_openai_client(openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=ADMIN_KEY,
                                                        max_retries=0), use_for_tracing=False)
    agents.set_default_openai_api("responses")

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    openai_up.enqueue(*WEATHER)
    agent = agents.Agent(name="forecaster", instructions="Answer with the tool.", tools=[get_weather],
                         model="openai/gpt-4o-mini")
    result = agents.Runner.run_sync(agent, "Weather in Oslo?")
    assert result.final_output == "It is sunny in Oslo."
    assert tool_result(openai_up) == "sunny in Oslo"
    assert openai_up.requests[-2].body["tools"][0]["function"]["name"] == "get_weather"
    assert [r.status for r in spend_rows(live)] == ["ok", "ok"]


@pytest.mark.parametrize("responses_api", [False, True])
def test_langchain_openai_invoke_stream_and_tools(live, admin, openai_up, responses_api: bool) -> None:
    from langchain_core.messages import ToolMessage
    from langchain_openai import ChatOpenAI

    add_credential(admin, "openai", openai_up)
    chat = ChatOpenAI(model="openai/gpt-4o-mini", base_url=f"{live.url}/v1", api_key=ADMIN_KEY,
                      max_retries=0, use_responses_api=responses_api)
    assert chat.invoke("Say hello").text == DEFAULT_TEXT
    assert "".join(c.text for c in chat.stream("Say hello")) == DEFAULT_TEXT
    openai_up.enqueue(*WEATHER)

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    tooled = chat.bind_tools([get_weather])
    asked = tooled.invoke("Weather in Oslo?")
    call = asked.tool_calls[0]
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Oslo"})
    answer = tooled.invoke(["Weather in Oslo?", asked, ToolMessage("sunny in Oslo", tool_call_id=call["id"])])
    assert answer.text == "It is sunny in Oslo." and tool_result(openai_up) == "sunny in Oslo"
    assert len(spend_rows(live)) == 4


def test_pydantic_ai_responses_model_with_a_tool(live, admin, openai_up) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    add_credential(admin, "openai", openai_up)
    model = OpenAIResponsesModel("openai/gpt-4o-mini", provider=OpenAIProvider(
        openai_client=openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=ADMIN_KEY, max_retries=0)))
    agent = Agent(model, instructions="Answer with the tool.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    openai_up.enqueue(*WEATHER)
    result = agent.run_sync("Weather in Oslo?")
    assert result.output == "It is sunny in Oslo." and tool_result(openai_up) == "sunny in Oslo"
    assert openai_up.last.body["messages"][0] == {"role": "system", "content": "Answer with the tool."}
    assert [r.status for r in spend_rows(live)] == ["ok", "ok"]
