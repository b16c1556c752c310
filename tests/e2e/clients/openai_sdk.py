"""The official ``openai`` SDK against Warden (``OPENAI_BASE_URL``/``OPENAI_API_KEY``
from the environment): chat completions, embeddings, models and the Responses API,
sync and async, as steps for ``tests/support/offline.py``."""

from __future__ import annotations

from typing import Any

import openai
from _serve import describe, dump, serve
from pydantic import BaseModel


def client(key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(max_retries=0, **({"api_key": key} if key else {}))


def method(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def request(path: str, raw: bool = False, key: str | None = None, **kwargs: Any) -> Any:
    """``client.<path>(**kwargs)`` (e.g. ``chat.completions.create``); with ``raw`` the
    response headers too."""
    c = client(key)
    if not raw:
        return dump(method(c, path)(**kwargs))
    response = method(c.with_raw_response, path)(**kwargs)
    return {"headers": dict(response.headers), "body": dump(response.parse())}


def stream(path: str, key: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Every chunk of a ``stream=True`` call, and the error that ended it, if one did."""
    chunks: list[Any] = []
    try:
        for chunk in method(client(key), path)(stream=True, **kwargs):
            chunks.append(dump(chunk))
    except openai.APIError as exc:
        return {"chunks": chunks, "error": describe(exc)}
    return {"chunks": chunks, "error": None}


def model_ids() -> list[str]:
    return [m.id for m in client().models.list()]


def responses_stream(**kwargs: Any) -> dict[str, Any]:
    """``responses.stream``: every event, then the final response."""
    with client().responses.stream(**kwargs) as s:
        events = [dump(e) for e in s]
        final = s.get_final_response()
    return {"events": events, "final": dump(final)}


def responses_stream_events(**kwargs: Any) -> list[Any]:
    """``responses.stream`` that may end in an error event: the events only."""
    with client().responses.stream(**kwargs) as s:
        return [dump(e) for e in s]


class City(BaseModel):
    name: str
    population: int


def responses_parse_city(**kwargs: Any) -> dict[str, Any]:
    parsed = client().responses.parse(text_format=City, **kwargs).output_parsed
    return {"type": type(parsed).__name__, "parsed": dump(parsed)}


async def async_create(**kwargs: Any) -> Any:
    async with openai.AsyncOpenAI(max_retries=0) as c:
        return dump(await c.chat.completions.create(**kwargs))


async def async_stream_first_token_then_close(**kwargs: Any) -> str:
    """Stream, stop at the first token and close: a client that hangs up mid-stream."""
    c = openai.AsyncOpenAI(max_retries=0)
    s = await c.chat.completions.create(stream=True, **kwargs)
    first = ""
    async for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            first = chunk.choices[0].delta.content
            break
    await s.close()
    await c.close()
    return first


if __name__ == "__main__":
    serve({f.__name__: f for f in (request, stream, model_ids, responses_stream, responses_stream_events,
                                   responses_parse_city,
                                   async_create, async_stream_first_token_then_close)})
