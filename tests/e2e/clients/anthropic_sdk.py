"""The official ``anthropic`` SDK against Warden (``ANTHROPIC_BASE_URL``/``ANTHROPIC_API_KEY``
from the environment): messages, plain and streamed, as steps for ``tests/support/offline.py``."""

from __future__ import annotations

from typing import Any

import anthropic
from _serve import dump, serve


def create(**kwargs: Any) -> Any:
    return dump(anthropic.Anthropic(max_retries=0).messages.create(**kwargs))


def stream(**kwargs: Any) -> dict[str, Any]:
    """``messages.stream``: the text as ``text_stream`` yields it, then the final message."""
    with anthropic.Anthropic(max_retries=0).messages.stream(**kwargs) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    return {"text": text, "final": dump(final)}


if __name__ == "__main__":
    serve({"create": create, "stream": stream})
