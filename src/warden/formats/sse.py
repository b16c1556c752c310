"""The one Server-Sent Events encoder every stream uses (OpenAI chunks, Anthropic
events, agent run events): ``id:`` / ``event:`` lines when given, one ``data:`` line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"  # OpenAI's end-of-stream sentinel
KEEPALIVE = b": ping\n\n"  # a comment line: clients ignore it, proxies see traffic


def frame(data: Any, *, event: str | None = None, id: int | str | None = None,
          default: Callable[[Any], Any] | None = None) -> bytes:
    head = b""
    if id is not None:
        head += b"id: " + str(id).encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + orjson.dumps(data, default=default) + b"\n\n"
