"""Embeddings end to end: the OpenAI SDK (base64, its default, and float) and
langchain-openai's ``OpenAIEmbeddings`` -> live Warden -> loopback providers. The
clients run in ``offline-run`` (``tests/e2e/clients/``)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from decimal import Decimal

import genai_prices
import pytest

from tests.support.app import ADMIN_KEY
from tests.support.offline import Client, warden_client
from tests.support.upstreams import add_credential
from warden.testing.upstream import embedding_vector

TEXTS = ["warden embeds this", "and this one too"]
EMBED = "embeddings.create"


@pytest.fixture
def sdk(live) -> Iterator[Client]:
    with warden_client("openai_sdk", live, ADMIN_KEY) as client:
        yield client


def float32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


def test_openai_sdk_default_base64_decodes_to_the_exact_vectors(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    raw = sdk.call("request", path=EMBED, raw=True, model="text-embedding-3-small", input=TEXTS,
                   dimensions=16)
    resp = raw["body"]
    assert openai_up.last.body["dimensions"] == 16
    assert [float32(d["embedding"]) for d in resp["data"]] == [embedding_vector(t, 16) for t in TEXTS]
    assert resp["model"] == "openai/text-embedding-3-small"
    tokens = sum(len(t.split()) for t in TEXTS)
    assert resp["usage"]["prompt_tokens"] == tokens
    cost = genai_prices.calc_price(genai_prices.Usage(input_tokens=tokens), "text-embedding-3-small",
                                   provider_id="openai").total_price
    assert Decimal(raw["headers"]["x-warden-cost-usd"]) == cost
    usage = admin.get("/api/usage", params={"group_by": "model"}).json()
    assert [(r["group"], r["requests"]) for r in usage["rows"]] == [("openai/text-embedding-3-small", 1)]


def test_openai_sdk_float_and_auto(live, admin, openai_up, gemini_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    add_credential(admin, "gemini", gemini_up)
    resp = sdk.call("request", path=EMBED, model="auto", input="one", encoding_format="float")
    assert resp["data"][0]["embedding"] == embedding_vector("one", 1536)
    assert resp["model"] == "openai/text-embedding-3-small"
    resp = sdk.call("request", path=EMBED, model="gemini-embedding-001", input=TEXTS, dimensions=8)
    assert [float32(d["embedding"]) for d in resp["data"]] == [embedding_vector(t, 8) for t in TEXTS]


def test_openai_sdk_sees_typed_errors(live, admin, openai_up, sdk) -> None:
    add_credential(admin, "openai", openai_up)
    exc = sdk.raises("BadRequestError", "request", path=EMBED, model="openai/gpt-4o-mini", input="x")
    assert exc.body["code"] == "no_eligible_deployment"
    bad = sdk.raises("UnprocessableEntityError", "request", path=EMBED, model="auto", input=[])
    assert bad.body["param"] == "input"


def test_langchain_openai_embeddings(live, admin, openai_up) -> None:
    add_credential(admin, "openai", openai_up)
    with warden_client("langchain_clients", live, ADMIN_KEY) as client:
        out = client.call("embed", documents=TEXTS, query="a question", dimensions=12)
    assert [float32(v) for v in out["documents"]] == [embedding_vector(t, 12) for t in TEXTS]
    assert float32(out["query"]) == embedding_vector("a question", 12)
    assert openai_up.last.body["input"] == ["a question"]
