"""The loop every client script runs: one JSON request a line on stdin
(``{"call": name, "args": {...}}``), one JSON reply a line on the real stdout
(``{"ok": result}`` or ``{"raised": {...}}``). A call is one step of a test, so the
test can script its simulator between steps while the SDK is imported once.
Anything a library prints goes to stderr, never into the replies."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import Any


def dump(obj: Any) -> Any:
    """A JSON-able view of an SDK object: pydantic models as they dump, plus the
    convenience properties tests read (``output_text``) that a dump leaves out."""
    if hasattr(obj, "model_dump"):
        out = obj.model_dump(mode="json")
        if isinstance(out, dict) and isinstance(getattr(type(obj), "output_text", None), property):
            out["output_text"] = obj.output_text
        return out
    if isinstance(obj, (list, tuple)):
        return [dump(o) for o in obj]
    return obj


def describe(exc: BaseException) -> dict[str, Any]:
    """What a test asserts on an exception the SDK raised: its class (and bases, for
    ``pytest.raises``-style subclass checks), HTTP status and error body."""
    return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
            "status_code": getattr(exc, "status_code", None), "body": getattr(exc, "body", None),
            "message": str(exc)}


def serve(functions: dict[str, Callable[..., Any]]) -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = functions[request["call"]](**request["args"])
            if inspect.isawaitable(result):
                result = asyncio.run(result)
            reply: dict[str, Any] = {"ok": result}
        except Exception as exc:  # the test decides whether this was expected
            reply = {"raised": describe(exc)}
        replies.write(json.dumps(reply, default=str) + "\n")
