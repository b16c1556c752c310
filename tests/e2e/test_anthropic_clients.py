"""langchain-anthropic against a live Warden whose upstream is the loopback
Anthropic simulator: invoke, stream (usage with cache reads), tools and token
counting (``count_tokens``, exact from the Anthropic deployment)."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.upstreams import add_credential
from warden.store.models import SpendRow
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall


def spend_rows(live) -> list[SpendRow]:
    async def read() -> list[SpendRow]:
        await live.services.spend.flush()
        async with live.services.db.session() as s:
            return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())

    return live.call(read())


def test_langchain_anthropic_invoke_stream_tools_and_count_tokens(live, admin, anthropic_up) -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

    add_credential(admin, "anthropic", anthropic_up)
    chat = ChatAnthropic(model="claude-sonnet-4-5", base_url=live.url, api_key=ADMIN_KEY, max_retries=0,
                         max_tokens=256)
    assert chat.invoke("Say hello").text == DEFAULT_TEXT
    anthropic_up.enqueue(Behaviour(text="alpha beta gamma", cache_read_tokens=40))
    chunks = list(chat.stream("Say hello"))
    assert "".join(c.text for c in chunks) == "alpha beta gamma"
    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage["input_token_details"]["cache_read"] == 40 and usage["output_tokens"] == 3

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    anthropic_up.enqueue(Behaviour(tool_calls=[SimToolCall("get_weather", {"city": "Oslo"})]),
                         Behaviour(text="It is sunny in Oslo."))
    tooled = chat.bind_tools([get_weather])
    asked = tooled.invoke("Weather in Oslo?")
    call = asked.tool_calls[0]
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Oslo"})
    answer = tooled.invoke(["Weather in Oslo?", asked, ToolMessage("sunny in Oslo", tool_call_id=call["id"])])
    assert answer.text == "It is sunny in Oslo."
    sent = anthropic_up.requests[-1].body["messages"][-1]["content"][0]
    assert sent["type"] == "tool_result" and "sunny in Oslo" in str(sent["content"])

    count = chat.get_num_tokens_from_messages([SystemMessage("be kind"), HumanMessage("hello there")])
    assert count == 4  # the simulator's exact count: four words
    assert anthropic_up.requests[-1].path == "/v1/messages/count_tokens"
    rows = spend_rows(live)
    assert [r.status for r in rows] == ["ok"] * 4 and rows[1].cache_read_tokens == 40  # counting is free
