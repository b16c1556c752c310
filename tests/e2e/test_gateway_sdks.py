"""The gateway end to end: official SDK clients -> live Warden -> loopback providers.
The SDKs run in ``offline-run`` (``tests/e2e/clients/``), one process per test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import genai_prices
import httpx
import pytest

from tests.support.app import ADMIN_KEY
from tests.support.offline import Client, warden_client
from tests.support.upstreams import add_credential
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall

@pytest.fixture
def sdk(live) -> Iterator[Client]:
    with warden_client("openai_sdk", live, ADMIN_KEY) as client:
        yield client


def expected_cost(model: str, provider: str, inp: int, out: int, cache_read: int = 0) -> Decimal:
    usage = genai_prices.Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cache_read)
    return genai_prices.calc_price(usage, model, provider_id=provider).total_price


def streamed_text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])


OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
CHAT = "chat.completions.create"


def test_openai_sdk_non_stream_with_exact_cost(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    raw = sdk.call("request", path=CHAT, raw=True, model="openai/gpt-4o-mini",
                   messages=[{"role": "user", "content": "Say hello to Warden"}])
    resp = raw["body"]
    assert resp["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["prompt_tokens"] == 4 and resp["usage"]["completion_tokens"] == OUTPUT_TOKENS
    h = raw["headers"]
    assert (h["x-warden-provider"], h["x-warden-model"], h["x-warden-attempts"]) == (
        "openai", "gpt-4o-mini", "1")
    cost = expected_cost("gpt-4o-mini", "openai", 4, OUTPUT_TOKENS)
    assert Decimal(h["x-warden-cost-usd"]) == cost and cost > 0
    assert float(h["x-warden-overhead-ms"]) >= 0 and len(h["x-request-id"]) == 32
    # What reached the provider: the upstream model id and the upstream key, not ours.
    sent = openai_up.last
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.headers["authorization"] == "Bearer sk-up-openai-0123456789"


def test_openai_sdk_stream_passes_chunks_and_usage(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    out = sdk.call("stream", path=CHAT, model="openai/gpt-4o-mini",
                   stream_options={"include_usage": True},
                   messages=[{"role": "user", "content": "stream please"}])
    chunks = out["chunks"]
    assert out["error"] is None and streamed_text(chunks) == DEFAULT_TEXT
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"]["content"]]
    assert len(content_chunks) == OUTPUT_TOKENS  # one for one with the upstream's deltas
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == OUTPUT_TOKENS
    extra = usage_chunk["usage"]["warden"]
    assert Decimal(extra["cost_usd"]) == expected_cost("gpt-4o-mini", "openai", 2, OUTPUT_TOKENS)
    assert openai_up.last.body["stream_options"] == {"include_usage": True}


def test_tools_and_json_schema_round_trip(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    openai_up.enqueue(Behaviour(tool_calls=[SimToolCall("get_weather", {"city": "Oslo"}),
                                            SimToolCall("get_time", {"tz": "UTC"})]))
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
             for n in ("get_weather", "get_time")]
    resp = sdk.call("request", path=CHAT, model="openai/gpt-4o-mini", tools=tools,
                    messages=[{"role": "user", "content": "weather and time?"}])
    calls = resp["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert resp["choices"][0]["finish_reason"] == "tool_calls"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    sdk.call("request", path=CHAT, model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "json"}],
             response_format={"type": "json_schema",
                              "json_schema": {"name": "thing", "schema": schema, "strict": True}})
    sent = openai_up.last.body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema


def test_anthropic_sdk_served_by_openai_format_provider(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    with warden_client("anthropic_sdk", live, ADMIN_KEY) as client:
        msg = client.call("create", model="openai/gpt-4o-mini", max_tokens=100, system="be brief",
                          messages=[{"role": "user", "content": "hi there"}])
        assert msg["content"][0]["text"] == DEFAULT_TEXT and msg["stop_reason"] == "end_turn"
        assert msg["usage"]["output_tokens"] == OUTPUT_TOKENS
        sent = openai_up.last.body
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        streamed = client.call("stream", model="openai/gpt-4o-mini", max_tokens=50,
                               messages=[{"role": "user", "content": "stream"}])
    assert streamed["text"] == DEFAULT_TEXT and streamed["final"]["usage"]["output_tokens"] == OUTPUT_TOKENS


def test_openai_sdk_served_by_anthropic_and_gemini(live, admin, anthropic_up, gemini_up, sdk) -> None:
    add_credential(admin, "anthropic", anthropic_up)
    add_credential(admin, "gemini", gemini_up)
    r = sdk.call("request", path=CHAT,
                 model="anthropic/claude-haiku-4-5", messages=[{"role": "user", "content": "hello"}])
    assert r["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert anthropic_up.last.headers["x-api-key"] == "sk-ant-up-0123456789"
    out = sdk.call("stream", path=CHAT, model="gemini/gemini-2.5-flash",
                   messages=[{"role": "user", "content": "hello"}])
    assert out["error"] is None and streamed_text(out["chunks"]) == DEFAULT_TEXT
    assert gemini_up.last.path.endswith(":streamGenerateContent")


def test_retry_on_429_then_failover_on_500(live, admin, openai_up, anthropic_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    openai_up.enqueue(Behaviour(status=429, retry_after=0))
    raw = sdk.call("request", path=CHAT,
                   raw=True, model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert raw["headers"]["x-warden-attempts"] == "2" and raw["headers"]["x-warden-provider"] == "openai"
    # 500 twice (first try + one retry) on the primary, then the fallback serves.
    openai_up.enqueue(Behaviour(status=500), Behaviour(status=500))
    raw = sdk.call("request", path=CHAT,
                   raw=True, model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                   extra_body={"warden": {"fallbacks": ["anthropic/claude-haiku-4-5"]}})
    assert raw["headers"]["x-warden-provider"] == "anthropic"
    assert raw["headers"]["x-warden-attempts"] == "3"
    assert raw["body"]["choices"][0]["message"]["content"] == DEFAULT_TEXT


def test_failover_on_connection_refused_and_timeout(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", None, label="dead", base_url="http://127.0.0.1:9/v1",
                   key="sk-dead-0123456789", models=[{"id": "gpt-4o-mini"}])
    add_credential(admin, "openai", openai_up, label="live", models=[{"id": "gpt-4o-mini"}])
    raw = sdk.call("request", path=CHAT,
                   raw=True, model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert raw["body"]["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert int(raw["headers"]["x-warden-attempts"]) >= 2
    # A slow first byte (over the 1 s limit) counts as a timeout and fails over too.
    openai_up.reset()
    add_credential(admin, "openai", openai_up, label="backup", models=[{"id": "gpt-4o-mini"}])
    openai_up.enqueue(Behaviour(delay=1.5), Behaviour(delay=1.5))
    resp = sdk.call("request", path=CHAT,
                    model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert resp["choices"][0]["message"]["content"] == DEFAULT_TEXT


def test_stream_fails_over_before_first_token_and_errors_after(live, admin, openai_up,
                                                               anthropic_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    fallback = {"warden": {"fallbacks": ["anthropic/claude-haiku-4-5"]}}
    # Dropped before any token: the client never notices, the fallback streams.
    openai_up.enqueue(Behaviour(drop_after=0), Behaviour(drop_after=0))
    out = sdk.call("stream", path=CHAT, model="openai/gpt-4o-mini",
                   messages=[{"role": "user", "content": "x"}], extra_body=fallback)
    assert out["error"] is None and streamed_text(out["chunks"]) == DEFAULT_TEXT
    # Dropped after three tokens: the client gets a typed error, not a silent truncation.
    openai_up.enqueue(Behaviour(drop_after=4))
    out = sdk.call("stream", path=CHAT, model="openai/gpt-4o-mini",
                   messages=[{"role": "user", "content": "x"}], extra_body=fallback)
    received = streamed_text(out["chunks"])
    assert received and received != DEFAULT_TEXT
    assert DEFAULT_TEXT.startswith(received)  # no repeated prefix from a fallback
    error = out["error"]
    assert error is not None and "APIError" in error["mro"]
    assert error["body"]["code"] == "upstream_unreachable"
    assert error["body"]["type"] == "upstream_error" and error["body"]["request_id"]


def test_breaker_opens_and_recovers(live, admin, openai_up, anthropic_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    fallback = {"warden": {"fallbacks": ["anthropic/claude-haiku-4-5"]}}

    def call() -> dict[str, str]:
        return sdk.call("request", path=CHAT, raw=True, model="openai/gpt-4o-mini",
                        messages=[{"role": "user", "content": "x"}], extra_body=fallback)["headers"]

    openai_up.default = Behaviour(status=503)
    for _ in range(3):  # 2 attempts each on the primary: the breaker opens after 3 failures
        assert call()["x-warden-provider"] == "anthropic"
    seen = len(openai_up.requests)
    for _ in range(3):
        assert call()["x-warden-attempts"] == "1"
    assert len(openai_up.requests) == seen  # nothing sent to the open deployment
    # After the cooldown one probe goes through; success closes the breaker.
    openai_up.default = Behaviour()
    time.sleep(3.1)
    assert call()["x-warden-provider"] == "openai"
    assert len(openai_up.requests) == seen + 1


def test_final_errors_are_typed_and_not_failed_over(live, admin, openai_up, anthropic_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "anthropic", anthropic_up)
    openai_up.enqueue(Behaviour(status=400, error_type="invalid_request_error",
                                error_message="bad thing"))
    exc = sdk.raises("BadRequestError", "request", path=CHAT, model="openai/gpt-4o-mini",
                     messages=[{"role": "user", "content": "x"}],
                     extra_body={"warden": {"fallbacks": ["anthropic/claude-haiku-4-5"]}})
    assert exc.body["code"] == "upstream_bad_request"
    assert anthropic_up.requests == []
    exc = sdk.raises("NotFoundError", "request", path=CHAT,
                     model="nope/never", messages=[{"role": "user", "content": "x"}])
    assert exc.body["code"] == "model_not_found"
    sdk.raises("AuthenticationError", "request", path=CHAT, key="wk-wrong-key-000000000000", model="auto",
               messages=[{"role": "user", "content": "x"}])


def test_unknown_price_is_reported_unknown_not_zero(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai-compatible", openai_up, models=[{"id": "my-local-llm",
                                                                   "free": False}])
    raw = sdk.call("request", path=CHAT, raw=True, model="openai-compatible/my-local-llm",
                   messages=[{"role": "user", "content": "x"}])
    assert raw["headers"]["x-warden-cost-usd"] == "unknown"
    usage = admin.get("/api/usage", params={"group_by": "model"}).json()
    row = next(r for r in usage["rows"] if r["group"] == "openai-compatible/my-local-llm")
    assert row["unpriced_requests"] == 1 and Decimal(row["cost_usd"]) == 0


def test_models_usage_and_explain(live, admin, openai_up, anthropic_up, sdk) -> None:
    add_credential(admin, "openai", openai_up, models=[{"id": "gpt-4o-mini"}, {"id": "gpt-4o"}])
    add_credential(admin, "anthropic", anthropic_up, models=[{"id": "claude-haiku-4-5"}])
    r = admin.put("/api/model-groups/fast", json={"members": ["anthropic/claude-haiku-4-5",
                                                              "openai/gpt-4o-mini"]})
    assert r.status_code == 200, r.text
    ids = sdk.call("model_ids")
    assert ids[:2] == ["auto", "fast"]
    assert {"openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-haiku-4-5"} <= set(ids)
    for model in ("fast", "openai/gpt-4o", "auto"):
        sdk.call("request", path=CHAT, model=model, messages=[{"role": "user", "content": "a b c"}])
    explain = admin.post("/api/route/explain", json={"model": "fast", "prompt": "hi"}).json()
    assert [s["model"] for s in explain["steps"]] == ["claude-haiku-4-5", "gpt-4o-mini"]
    assert explain["kind"] == "group" and all(s["reason"] for s in explain["steps"])
    auto = admin.post("/api/route/explain", json={"prompt": "hi", "tools": True}).json()
    assert auto["complexity"]["level"] == "simple" and auto["steps"]
    usage = admin.get("/api/usage", params={"group_by": "provider"}).json()
    assert usage["total_requests"] == 3
    total = sum(Decimal(r["cost_usd"]) for r in usage["rows"])
    assert Decimal(usage["total_cost_usd"]) == total > 0


def test_async_sdk_and_disconnect_is_metered_cancelled(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    r = sdk.call("async_create", model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert r["choices"][0]["message"]["content"] == DEFAULT_TEXT
    openai_up.enqueue(Behaviour(token_delay=0.2, text=" ".join(["word"] * 50)))
    first = sdk.call("async_stream_first_token_then_close", model="openai/gpt-4o-mini",
                     messages=[{"role": "user", "content": "x"}])
    assert first.strip() == "word"
    for _ in range(50):
        statuses = live.call(_statuses(live))
        if "cancelled" in statuses:
            break
        time.sleep(0.1)
    assert statuses.count("ok") == 1 and "cancelled" in statuses


async def _statuses(live) -> list[str]:
    from sqlalchemy import select

    from warden.store.models import SpendRow

    await live.services.spend.flush()
    async with live.services.db.session() as s:
        return list((await s.execute(select(SpendRow.status).order_by(SpendRow.id))).scalars())


def test_unauthenticated_and_bad_body_errors(live) -> None:
    r = httpx.post(f"{live.url}/v1/chat/completions", json={"model": "auto", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(f"{live.url}/v1/chat/completions", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                   json={"model": "auto"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages"
