"""OpenAI Embeddings wire format, client side, as pure code: the body of
``POST /v1/embeddings``, its conversion to an :class:`EmbeddingRequest`, and the
``list`` of ``embedding`` objects rendered back.

``input`` is a string, a list of strings, a list of token ids or a list of such
lists (at most 2048 inputs, none empty), as OpenAI takes it; token ids are
passed on only to OpenAI-format upstreams (Gemini refuses them with a 400).
``encoding_format: "base64"`` (the OpenAI SDK's default) is each vector's
float32 little-endian bytes in base64, exactly as OpenAI encodes them; the
vectors come from the upstream as floats, so ``float`` passes them on as they
were written.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from warden.errors import NonNegativeInt32
from warden.formats.common import cost_text, served_model
from warden.gateway.metering import CallInfo
from warden.gateway.types import EmbeddingInput, EmbeddingRequest, EmbeddingResponse

MAX_INPUTS = 2048  # OpenAI's limit of inputs per request
_TokenId = NonNegativeInt32  # 662.0 is 662, as JSON Schema's integer says; true is not 1
_Text = Annotated[str, Field(min_length=1)]
_Tokens = Annotated[list[_TokenId], Field(min_length=1)]


def _one_message(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # One sentence for the field, not one error per member of the union.
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(f"must be a non-empty string, a list of 1 to {MAX_INPUTS} non-empty "
                         "strings, a list of token ids (0 to 2^31-1) or a list of such lists"
                         ) from None


class EmbeddingsBody(BaseModel):
    model: str = Field(min_length=1)
    input: Annotated[_Text | Annotated[list[_Text], Field(min_length=1, max_length=MAX_INPUTS)]
                     | _Tokens | Annotated[list[_Tokens], Field(min_length=1, max_length=MAX_INPUTS)],
                     WrapValidator(_one_message)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    user: str | None = None
    warden: dict[str, Any] | None = None


def to_embedding_request(body: EmbeddingsBody) -> EmbeddingRequest:
    raw = body.input
    inputs: list[EmbeddingInput]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw[0], int):
        inputs = [raw]  # type: ignore[list-item]  # one input given as token ids
    else:
        inputs = list(raw)  # type: ignore[arg-type]
    return EmbeddingRequest(model=body.model, inputs=inputs, dimensions=body.dimensions,
                            user=body.user)


def float32_base64(vector: list[float]) -> str:
    """The vector as OpenAI's ``base64`` encoding: float32, little-endian."""
    packed = array("f", vector)
    if sys.byteorder == "big":  # pragma: no cover - every supported platform is little-endian
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def render_embeddings(resp: EmbeddingResponse, info: CallInfo,
                      encoding_format: Literal["float", "base64"] = "float") -> dict[str, Any]:
    """The ``list`` object OpenAI answers with; usage carries Warden's cost too."""
    encode = float32_base64 if encoding_format == "base64" else None
    data = [{"object": "embedding", "index": i, "embedding": encode(v) if encode else v}
            for i, v in enumerate(resp.vectors)]
    tokens = resp.usage.input_tokens
    return {"object": "list", "data": data, "model": served_model(info),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                      "warden": {"cost_usd": cost_text(info.cost_usd)}}}
