"""langchain-anthropic against a live Warden whose upstream is the loopback
Anthropic simulator: invoke, stream (usage with cache reads), tools and token
counting (``count_tokens``, exact from the Anthropic deployment). The client runs
in ``offline-run`` (``tests/e2e/clients/langchain_clients.py``)."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.offline import warden_client
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
    add_credential(admin, "anthropic", anthropic_up)
    with warden_client("langchain_clients", live, ADMIN_KEY) as chat:
        assert chat.call("invoke", kind="anthropic", prompt="Say hello") == DEFAULT_TEXT
        anthropic_up.enqueue(Behaviour(text="alpha beta gamma", cache_read_tokens=40))
        streamed = chat.call("stream", kind="anthropic", prompt="Say hello")
        assert "".join(streamed["texts"]) == "alpha beta gamma"
        usage = streamed["usage"]
        assert usage["input_token_details"]["cache_read"] == 40 and usage["output_tokens"] == 3

        anthropic_up.enqueue(Behaviour(tool_calls=[SimToolCall("get_weather", {"city": "Oslo"})]),
                             Behaviour(text="It is sunny in Oslo."))
        out = chat.call("weather_tool_round_trip", kind="anthropic", question="Weather in Oslo?")
        assert (out["call"]["name"], out["call"]["args"]) == ("get_weather", {"city": "Oslo"})
        assert out["answer"] == "It is sunny in Oslo."
        sent = anthropic_up.requests[-1].body["messages"][-1]["content"][0]
        assert sent["type"] == "tool_result" and "sunny in Oslo" in str(sent["content"])

        count = chat.call("count_anthropic_tokens", system="be kind", human="hello there")
    assert count == 4  # the simulator's exact count: four words
    assert anthropic_up.requests[-1].path == "/v1/messages/count_tokens"
    rows = spend_rows(live)
    assert [r.status for r in rows] == ["ok"] * 4 and rows[1].cache_read_tokens == 40  # counting is free
