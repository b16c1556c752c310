"""``POST /v1/embeddings`` through the real app (ASGI) in front of the loopback
OpenAI and Gemini simulators: vectors, encodings, routing, cost, budgets, rate
limits, failover, spend rows and usage."""

from __future__ import annotations

import base64
from array import array
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from sqlalchemy import select

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from tests.support.upstreams import UPSTREAM_KEYS
from warden.services import Services
from warden.store.models import SpendRow
from warden.testing.upstream import Behaviour, UpstreamServer, embedding_vector

TEXTS = ["the quick brown fox", "jumps over the lazy dog today"]
WORDS = sum(len(t.split()) for t in TEXTS)  # the simulator's prompt_tokens for TEXTS


@pytest.fixture
async def openai_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up:
        yield up


@pytest.fixture
async def gemini_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("gemini", api_key=UPSTREAM_KEYS["gemini"]) as up:
        yield up


async def add_key(c: httpx.AsyncClient, provider: str, up: UpstreamServer, label: str = "main",
                  **extra) -> dict:  # noqa: ANN003
    r = await c.post("/api/byok", json={"provider": provider, "label": label, "base_url": up.base_url,
                                        "api_key": UPSTREAM_KEYS[up.format], **extra})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def api(services: Services, openai_up: UpstreamServer,
              gemini_up: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    """The admin client of a workspace with an OpenAI and a Gemini key (the catalog's models)."""
    async with client_for(services) as c:
        await add_key(c, "openai", openai_up)
        await add_key(c, "gemini", gemini_up)
        yield c


def genai_cost(provider_id: str, model: str, tokens: int) -> Decimal:
    return calc_price(GenaiUsage(input_tokens=tokens), model_ref=model, provider_id=provider_id).total_price


async def spend_rows(services: Services) -> list[SpendRow]:
    await services.spend.flush()
    async with services.db.session() as s:
        return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())


async def test_float_vectors_cost_to_the_last_digit_and_are_recorded(
        api: httpx.AsyncClient, services: Services, openai_up: UpstreamServer) -> None:
    r = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": TEXTS,
                                               "encoding_format": "float"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "openai/text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert [d["embedding"] for d in body["data"]] == [embedding_vector(t, 1536) for t in TEXTS]
    expected = genai_cost("openai", "text-embedding-3-small", WORDS)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == WORDS
    assert Decimal(body["usage"]["warden"]["cost_usd"]) == expected
    assert r.headers["x-warden-cost-usd"] == format(expected, "f")
    assert r.headers["x-warden-model"] == "text-embedding-3-small"
    sent = openai_up.last.body
    assert sent == {"model": "text-embedding-3-small", "input": TEXTS, "encoding_format": "float"}
    (row,) = await spend_rows(services)
    assert (row.model, row.input_tokens, row.output_tokens, row.status) == (
        "text-embedding-3-small", WORDS, 0, "ok")
    assert row.cost_usd == expected
    usage = (await api.get("/api/usage", params={"group_by": "model"})).json()
    (line,) = [u for u in usage["rows"] if u["group"] == "openai/text-embedding-3-small"]
    assert line["requests"] == 1 and Decimal(str(line["cost_usd"])) == expected


async def test_base64_is_exact_float32_little_endian(api: httpx.AsyncClient,
                                                     openai_up: UpstreamServer) -> None:
    r = await api.post("/v1/embeddings", json={"model": "openai/text-embedding-3-large",
                                               "input": "one text", "encoding_format": "base64",
                                               "dimensions": 8})
    assert r.status_code == 200, r.text
    (item,) = r.json()["data"]
    raw = base64.b64decode(item["embedding"])
    assert raw == array("f", embedding_vector("one text", 8)).tobytes() and len(raw) == 8 * 4
    assert openai_up.last.body["dimensions"] == 8
    assert openai_up.last.body["encoding_format"] == "float"  # Warden encodes, the upstream need not


async def test_token_arrays_reach_openai_and_gemini_refuses_them(api: httpx.AsyncClient,
                                                                 openai_up: UpstreamServer) -> None:
    r = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                               "input": [[1, 2, 3], [4, 5]], "dimensions": 4})
    assert r.status_code == 200, r.text
    assert [d["embedding"] for d in r.json()["data"]] == [embedding_vector([1, 2, 3], 4),
                                                          embedding_vector([4, 5], 4)]
    assert openai_up.last.body["input"] == [[1, 2, 3], [4, 5]] and r.json()["usage"]["prompt_tokens"] == 5
    one = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": [7, 8]})
    assert one.status_code == 200 and openai_up.last.body["input"] == [[7, 8]]
    r = await api.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": [1, 2]})
    err = assert_envelope(r, 400, "token_input_unsupported")
    assert "input" in err["message"] and "token ids" in err["message"]


async def test_gemini_single_and_batch(api: httpx.AsyncClient, services: Services,
                                       gemini_up: UpstreamServer) -> None:
    r = await api.post("/v1/embeddings", json={"model": "gemini/gemini-embedding-001",
                                               "input": "hello there", "dimensions": 6})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == embedding_vector("hello there", 6)
    assert gemini_up.last.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert gemini_up.last.body == {"model": "models/gemini-embedding-001",
                                   "content": {"parts": [{"text": "hello there"}]},
                                   "outputDimensionality": 6}
    r = await api.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": TEXTS})
    assert [d["embedding"] for d in r.json()["data"]] == [embedding_vector(t, 3072) for t in TEXTS]
    assert gemini_up.last.path.endswith(":batchEmbedContents")
    assert len(gemini_up.last.body["requests"]) == 2
    # Gemini reports no tokens: Warden meters its estimate (characters / 4 per input).
    tokens = sum(-(-len(t) // 4) for t in TEXTS)
    assert r.json()["usage"]["prompt_tokens"] == tokens
    assert Decimal(r.headers["x-warden-cost-usd"]) == genai_cost("google", "gemini-embedding-001", tokens)


async def test_auto_is_the_cheapest_embedding_model_and_chat_never_gets_one(
        api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/embeddings", json={"model": "auto", "input": "x"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "openai/text-embedding-3-small"  # $0.02/M, the cheapest listed
    chat = await api.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200 and "embedding" not in chat.headers["x-warden-model"]
    r = await api.post("/v1/chat/completions", json={
        "model": "openai/text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]})
    err = assert_envelope(r, 400, "no_eligible_deployment")
    assert "embedding model" in err["message"]
    r = await api.post("/v1/embeddings", json={"model": "openai/gpt-4o-mini", "input": "x"})
    err = assert_envelope(r, 400, "no_eligible_deployment")
    assert "needs embeddings" in err["message"]


async def test_auto_without_an_embedding_model_is_a_clear_400(services: Services,
                                                              openai_up: UpstreamServer) -> None:
    async with client_for(services) as c:
        await add_key(c, "openai", openai_up, models=[{"id": "gpt-4o-mini"}])
        r = await c.post("/v1/embeddings", json={"model": "auto", "input": "x"})
    err = assert_envelope(r, 400, "no_eligible_deployment")
    assert "needs embeddings" in err["message"] and openai_up.requests == []


async def test_models_lists_embedding_models(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/models")
    models = {m["id"]: m for m in r.json()["data"]}
    for name in ("openai/text-embedding-3-small", "openai/text-embedding-3-large",
                 "gemini/gemini-embedding-001"):
        assert models[name]["capabilities"] == ["embeddings"]
        assert models[name]["price_known"] is True


async def test_fails_over_to_another_key_of_the_same_model_before_replying(
        services: Services, openai_up: UpstreamServer) -> None:
    async with client_for(services) as c:
        for label in ("a", "b"):
            await add_key(c, "openai", openai_up, label=label,
                          models=[{"id": "text-embedding-3-small"}])
        openai_up.enqueue(Behaviour(status=500))
        r = await c.post("/v1/embeddings", json={"model": "auto", "input": "x", "dimensions": 3})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == embedding_vector("x", 3)
    assert r.headers["x-warden-attempts"] == "2"


async def test_upstream_errors_are_typed(api: httpx.AsyncClient, openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(status=400, error_message="dimensions not supported"))
    r = await api.post("/v1/embeddings", json={"model": "text-embedding-ada-002", "input": "x",
                                               "dimensions": 3})
    assert "dimensions not supported" in assert_envelope(r, 400, "upstream_bad_request")["message"]
    openai_up.enqueue(Behaviour(malformed=True), Behaviour(malformed=True), Behaviour(malformed=True))
    r = await api.post("/v1/embeddings", json={"model": "openai/text-embedding-3-small", "input": "x"})
    assert_envelope(r, 502, "upstream_malformed")


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "auto", "input": []}, "input"),
    ({"model": "auto", "input": ""}, "input"),
    ({"model": "auto", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "auto", "input": [[1, -2]]}, "input"),
    ({"input": "x"}, "model"),
])
async def test_bad_bodies_name_the_field(api: httpx.AsyncClient, openai_up: UpstreamServer,
                                         body: dict, param: str) -> None:
    r = await api.post("/v1/embeddings", json=body)
    err = assert_envelope(r, 422, "validation_error")
    assert err["param"].split(".")[0] == param and openai_up.requests == []


async def test_budget_reserves_and_settles_the_exact_cost(api: httpx.AsyncClient) -> None:
    r = await api.put("/api/budgets", json={"scope": "workspace", "period": "month", "limit_usd": "1"})
    assert r.status_code == 200, r.text
    r = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": TEXTS})
    assert r.status_code == 200
    (budget,) = (await api.get("/api/budgets")).json()["budgets"]
    assert Decimal(budget["spent_usd"]) == genai_cost("openai", "text-embedding-3-small", WORDS)
    assert Decimal(budget["reserved_usd"]) == 0
    tiny = await api.put("/api/budgets", json={"scope": "workspace", "period": "month",
                                               "limit_usd": "0.0000001"})
    assert tiny.status_code == 200
    r = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                               "input": ["word " * 2000] * 4})
    assert_envelope(r, 429, "budget_exceeded")


async def test_rate_limits_apply(services: Services, api: httpx.AsyncClient,
                                 openai_up: UpstreamServer) -> None:
    key = (await api.post("/api/keys", json={"name": "bot", "rpm_limit": 1})).json()
    async with client_for(services, key["key"]) as c:
        body = {"model": "text-embedding-3-small", "input": "x"}
        first = await c.post("/v1/embeddings", json=body)
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "0"
        assert_envelope(await c.post("/v1/embeddings", json=body), 429, "rate_limit_exceeded")
    assert len(openai_up.requests) == 1


async def test_a_credentials_own_embedding_model_joins_auto(services: Services,
                                                            openai_up: UpstreamServer) -> None:
    async with client_for(services) as c:
        await add_key(c, "openai-compatible", openai_up, models=[
            {"id": "nomic-embed-text", "capabilities": ["embeddings"], "quality": 0.6},
            {"id": "llama3"}])
        r = await c.post("/v1/embeddings", json={"model": "auto", "input": "local", "dimensions": 2})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "openai-compatible/nomic-embed-text"
        assert r.headers["x-warden-cost-usd"] == "0"  # a local provider is free
        assert r.json()["data"][0]["embedding"] == embedding_vector("local", 2)
        models = {m["id"]: m for m in (await c.get("/v1/models")).json()["data"]}
        assert models["openai-compatible/nomic-embed-text"]["capabilities"] == ["embeddings"]
