"""Embeddings end to end: the OpenAI SDK (base64, its default, and float) and
langchain-openai's ``OpenAIEmbeddings`` -> live Warden -> loopback providers."""

from __future__ import annotations

from array import array
from decimal import Decimal

import genai_prices
import openai
import pytest

from tests.support.app import ADMIN_KEY
from tests.support.upstreams import add_credential
from warden.testing.upstream import embedding_vector

TEXTS = ["warden embeds this", "and this one too"]


def oai(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def float32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


def test_openai_sdk_default_base64_decodes_to_the_exact_vectors(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    raw = oai(live).embeddings.with_raw_response.create(model="text-embedding-3-small", input=TEXTS,
                                                        dimensions=16)
    resp = raw.parse()
    assert openai_up.last.body["dimensions"] == 16
    assert [float32(d.embedding) for d in resp.data] == [embedding_vector(t, 16) for t in TEXTS]
    assert resp.model == "openai/text-embedding-3-small"
    tokens = sum(len(t.split()) for t in TEXTS)
    assert resp.usage.prompt_tokens == tokens
    cost = genai_prices.calc_price(genai_prices.Usage(input_tokens=tokens), "text-embedding-3-small",
                                   provider_id="openai").total_price
    assert Decimal(raw.headers["x-warden-cost-usd"]) == cost
    usage = admin.get("/api/usage", params={"group_by": "model"}).json()
    assert [(r["group"], r["requests"]) for r in usage["rows"]] == [("openai/text-embedding-3-small", 1)]


def test_openai_sdk_float_and_auto(live, admin, openai_up, gemini_up) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "gemini", gemini_up)
    resp = oai(live).embeddings.create(model="auto", input="one", encoding_format="float")
    assert resp.data[0].embedding == embedding_vector("one", 1536)
    assert resp.model == "openai/text-embedding-3-small"
    resp = oai(live).embeddings.create(model="gemini-embedding-001", input=TEXTS, dimensions=8)
    assert [float32(d.embedding) for d in resp.data] == [embedding_vector(t, 8) for t in TEXTS]


def test_openai_sdk_sees_typed_errors(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    with pytest.raises(openai.BadRequestError) as exc:
        oai(live).embeddings.create(model="openai/gpt-4o-mini", input="x")
    assert exc.value.body["code"] == "no_eligible_deployment"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        oai(live).embeddings.create(model="auto", input=[])
    assert bad.value.body["param"] == "input"


def test_langchain_openai_embeddings(live, admin, openai_up) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    add_credential(admin, "openai", openai_up)
    # check_embedding_ctx_length=False: send the texts, not tiktoken ids (tiktoken would
    # download its tables, and no traffic leaves loopback here).
    emb = langchain_openai.OpenAIEmbeddings(model="text-embedding-3-small", base_url=f"{live.url}/v1",
                                            api_key=ADMIN_KEY, dimensions=12, max_retries=0,
                                            check_embedding_ctx_length=False)
    vectors = emb.embed_documents(TEXTS)
    assert [float32(v) for v in vectors] == [embedding_vector(t, 12) for t in TEXTS]
    assert float32(emb.embed_query("a question")) == embedding_vector("a question", 12)
    assert openai_up.last.body["input"] == ["a question"]
