"""The OpenAI Embeddings client format: bodies in every input shape, replies in both encodings."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal

import pytest
from openai.types import CreateEmbeddingResponse

from warden.errors import ValidationFailed
from warden.formats.common import parse_body
from warden.formats.openai_embeddings import (
    EmbeddingsBody,
    float32_base64,
    render_embeddings,
    to_embedding_request,
)
from warden.gateway.metering import CallInfo
from warden.gateway.types import EmbeddingResponse, Usage


def body(raw: bytes) -> EmbeddingsBody:
    return parse_body(EmbeddingsBody, raw)


@pytest.mark.parametrize(("given", "inputs"), [
    (b'"one text"', ["one text"]),
    (b'["a", "b"]', ["a", "b"]),
    (b"[1, 2, 3]", [[1, 2, 3]]),  # one input as token ids
    (b"[[1, 2], [3]]", [[1, 2], [3]]),
    (b"[59055, 662.0]", [[59055, 662]]),  # a whole float is that token id, as JSON Schema's integer
])
def test_every_input_shape(given: bytes, inputs: list) -> None:
    req = to_embedding_request(body(b'{"model": "auto", "dimensions": 8, "user": "u", "input": '
                                    + given + b', "warden": {"prefer": "cost"}}'))
    assert (req.model, req.inputs, req.dimensions, req.user) == ("auto", inputs, 8, "u")
    assert req.has_token_arrays == (not isinstance(inputs[0], str))


@pytest.mark.parametrize("given", [b'""', b"[]", b'[""]', b"[[]]", b'["a", [1]]', b"[true]",
                                   b"[-1]", b"[1.5]", b"[1, 1.5]",
                                   b"[2147483648.0]", b"[2147483648]", b'{"a": 1}', b"null",
                                   b"[" + b'"x",' * 2048 + b'"x"]'])
def test_bad_inputs_are_one_422_naming_input(given: bytes) -> None:
    with pytest.raises(ValidationFailed) as exc:
        body(b'{"model": "m", "input": ' + given + b"}")
    assert exc.value.param == "input" and "a list of token ids" in exc.value.message


def info(cost: Decimal | None) -> CallInfo:
    return CallInfo("openai", "text-embedding-3-small", "c:m", "c", 1, cost, 0.1)


def test_float_reply_is_the_sdks_type_with_the_cost() -> None:
    resp = EmbeddingResponse("text-embedding-3-small", [[0.5, -0.25], [1.0, 0.0]], Usage(7))
    out = render_embeddings(resp, info(Decimal("0.00000014")))
    parsed = CreateEmbeddingResponse.model_validate(out)
    assert [d.embedding for d in parsed.data] == resp.vectors and [d.index for d in parsed.data] == [0, 1]
    assert parsed.model == "openai/text-embedding-3-small"
    assert (parsed.usage.prompt_tokens, parsed.usage.total_tokens) == (7, 7)
    assert out["usage"]["warden"] == {"cost_usd": "0.00000014"}
    assert render_embeddings(resp, info(None))["usage"]["warden"] == {"cost_usd": None}


def test_base64_is_float32_little_endian() -> None:
    vector = [0.1, -2.5, 3.0e-8, 1.0]
    encoded = float32_base64(vector)
    assert base64.b64decode(encoded) == struct.pack("<4f", *vector)
    out = render_embeddings(EmbeddingResponse("m", [vector], Usage(1)), info(None), "base64")
    assert out["data"][0]["embedding"] == encoded
