"""What the client wire formats share, as pure code: body parsing that names the
bad field, image URLs as parts, the served model and cost as text, the inverse of
a vocabulary table, and the loop that renders a gateway stream as SSE frames."""

from __future__ import annotations

import binascii
import logging
from collections.abc import AsyncIterable, AsyncIterator, Collection, Hashable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from warden.errors import InvalidRequest, ValidationFailed, WardenError
from warden.gateway.providers.base import split_data_url
from warden.gateway.types import ImagePart, StreamEvent

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo

Body = TypeVar("Body", bound=BaseModel)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)
_log = logging.getLogger("warden.formats")


def parse_body(model: type[Body], raw: bytes) -> Body:
    """JSON bytes -> ``model``; 400 for bad JSON, 422 naming the first bad field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationFailed("body: the request body must be a JSON object", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed.of(exc) from None


def invalid(path: str, message: str) -> ValidationFailed:
    """A 422 for a field the models accept in shape but we cannot serve."""
    return ValidationFailed(f"{path}: {message}", param=path)


def when(prop: str, value: str, then: dict[str, Any]) -> ConfigDict:
    """A model's config publishing a rule its conversion checks: while ``prop`` is
    ``value``, the JSON Schema ``then`` applies too (so /openapi.json does not lie)."""
    return ConfigDict(json_schema_extra={"if": {"properties": {prop: {"const": value}}, "required": [prop]},
                                         "then": then})


_MODES = {"enum": ["auto", "none", "required"]}
_NAME = {"type": "string", "minLength": 1}
# ``tool_choice`` as each format's conversion reads it (a string mode, or a named function).
CHAT_TOOL_CHOICE = {"anyOf": [
    _MODES, {"type": "null"},
    {"type": "object", "required": ["function"],  # {"type": "function", "function": {"name"}}
     "properties": {"function": {"type": "object", "required": ["name"], "properties": {"name": _NAME}}}},
    {"type": "object", "required": ["name"], "properties": {"name": _NAME},  # legacy {"name"}
     "not": {"required": ["function"], "properties": {"function": {"type": "object"}}}},
]}
RESPONSES_TOOL_CHOICE = {"anyOf": [
    _MODES, {"type": "null"},
    {"type": "object", "required": ["type", "name"], "properties": {"type": {"const": "function"}, "name": _NAME}},
]}


def chat_part_schema(schema: dict[str, Any]) -> None:
    """A chat content part as formats/openai._parts reads it: a known type, and its field."""
    schema["properties"]["type"]["enum"] = ["text", "refusal", "image_url"]
    schema["allOf"] = [{"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                        "then": {"required": [kind], "properties": {kind: {"not": {"type": "null"}}}}}
                       for kind in ("text", "refusal", "image_url")]


def image_part(url: str, detail: str | None = None, *, path: str = "image_url.url") -> ImagePart:
    """An image URL as a part: ``data:`` URLs become inline base64 (checked to decode),
    other URLs must be http(s): a ``file:`` or other scheme never reaches a provider."""
    if url.startswith("data:"):
        inline = split_data_url(url)
        if inline is None:
            raise invalid(path, "a data: URL must be data:<media type>;base64,<data>")
        return ImagePart(media_type=inline[0], data=checked_base64(inline[1], path), detail=detail)
    if not url.lower().startswith(("https://", "http://")):
        raise invalid(path, "an image URL must be https://, http:// or a base64 data: URL")
    return ImagePart(url=url, detail=detail)


def checked_base64(data: str, path: str) -> str:
    """``data`` if it is non-empty, strict base64; else a 422 naming ``path``."""
    try:
        ok = bool(data) and bool(binascii.a2b_base64(data, strict_mode=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise invalid(path, "image data is not valid base64")
    return data


def served_model(info: CallInfo) -> str:
    return f"{info.provider}/{info.model}"


def cost_text(cost: Decimal | None) -> str | None:
    """A decimal string, or None when the price is unknown (never "0" for unknown)."""
    return None if cost is None else format(cost, "f")


def inverse(forward: Mapping[K, V], *, canonical: Mapping[V, K] | None = None,
            skip: Collection[V] = ()) -> dict[V, K]:
    """The inverse of a vocabulary table (their word -> ours), so our word is
    rendered as one of theirs that reads back to it.

    Where several of their words mean one of ours, ``canonical`` names the one to
    render (it must be one of them); ``skip`` leaves values out. A many-to-one
    value with no choice is an error, so a new entry upstream cannot silently
    change what clients are sent."""
    canonical = canonical or {}
    out: dict[V, K] = {}
    for key, value in forward.items():
        if value in skip:
            continue
        if value in canonical:
            out[value] = canonical[value]
        elif value in out:
            raise ValueError(f"{value!r} is meant by {out[value]!r} and {key!r}: choose one")
        else:
            out[value] = key
    for value, key in canonical.items():
        if forward.get(key) != value:
            raise ValueError(f"canonical {key!r} does not mean {value!r}")
    return out


def incomplete_stream() -> WardenError:
    """The error for an upstream stream that stopped without saying why."""
    return WardenError("the upstream stream ended before it finished", code="stream_incomplete", status=502)


class StreamRenderer(Protocol):
    """Turns gateway stream events into one wire format's SSE frames (OpenAI chunks,
    Anthropic events). ``failed`` turns true once an error frame was written."""

    failed: bool

    def start(self) -> bytes: ...

    def event(self, ev: StreamEvent) -> bytes: ...

    def error(self, error: WardenError) -> bytes: ...

    def end(self) -> bytes: ...


async def render_stream(stream: AsyncIterable[StreamEvent], renderer: StreamRenderer,
                        log: logging.Logger = _log) -> AsyncIterator[bytes]:
    """SSE frames for a gateway stream, written as its events arrive: one frame (or
    none) per event, an error frame after the first token instead of a silent end.

    The opening frame leaves with the first event's: an open stream holds its events
    up to the first token already (``GatewayStream``), so waiting for it delays
    nothing, and the first token reaches the client in one write, not two."""
    opening = renderer.start()
    try:
        async for ev in stream:
            if renderer.failed:
                # The gateway ends right after an error event; draining (not
                # abandoning) it lets it settle the call as failed, not cancelled.
                continue
            frame = renderer.event(ev)
            if frame:
                if opening:
                    frame, opening = opening + frame, b""
                yield frame
    except WardenError as exc:
        yield opening + renderer.error(exc)
        return
    except Exception:
        log.exception("stream failed")
        yield opening + renderer.error(WardenError("internal error while streaming"))
        return
    tail = opening + renderer.end()
    if tail:
        yield tail
