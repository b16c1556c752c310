"""OpenAI Responses API streams: gateway stream events as the semantic event
sequence OpenAI emits, each ``event:`` named and carrying a ``sequence_number``.

``response.created`` and ``response.in_progress`` open it. Each output item
(reasoning, message, function call) is ``response.output_item.added``, its
content part (``response.content_part.added``), deltas
(``response.reasoning_text.delta``, ``response.output_text.delta``,
``response.function_call_arguments.delta``), then the ``…done`` events in
reverse order; an item closes when the next one opens or the stream finishes.
``response.completed`` (``response.incomplete`` when the output was cut by
``max_output_tokens`` or a content filter) carries the whole response with its
usage and cost. A typed error after the first byte is an ``error`` event (code,
message, param) followed by ``response.failed`` with the output so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warden.errors import WardenError
from warden.formats import sse
from warden.formats.common import incomplete_stream
from warden.formats.responses import (
    ResponsesCall,
    function_call_item,
    message_item,
    new_item_id,
    reasoning_item,
    response_object,
)
from warden.gateway.types import (
    FinishEvent,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo


class _Item:
    """One output item being streamed: its kind, index, id and text so far."""

    __slots__ = ("kind", "index", "id", "text", "call_id", "name", "done")

    def __init__(self, kind: str, index: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.index = index
        self.id = new_item_id(kind)
        self.text = ""
        self.call_id = call_id
        self.name = name
        self.done: dict[str, Any] | None = None  # the finished item, once closed


class ResponseEventRenderer:
    """Turns stream events into Responses API SSE events, one event at a time.

    ``final`` is the finished ``response`` object once ``end()`` rendered it (the
    caller stores it before the last frame leaves)."""

    def __init__(self, call: ResponsesCall, info: CallInfo) -> None:
        self.call = call
        self.info = info
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items, in output order
        self.open: _Item | None = None  # the reasoning or message item being written
        self.calls: dict[int, _Item] = {}  # function calls by the stream's tool index
        self.count = 0  # items opened so far: the next output_index
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self.final: dict[str, Any] | None = None
        self.failed = False

    def _event(self, kind: str, **data: Any) -> bytes:
        frame = sse.frame({"type": kind, "sequence_number": self.seq, **data}, event=kind)
        self.seq += 1
        return frame

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.call, status=status, output=list(self.output), info=self.info, **extra)

    def start(self) -> bytes:
        return (self._event("response.created", response=self._response("in_progress"))
                + self._event("response.in_progress", response=self._response("in_progress")))

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._text("message", ev.text)
        if isinstance(ev, ReasoningDelta):
            return self._text("reasoning", ev.text)
        if isinstance(ev, ToolCallDelta):
            return self._tool(ev)
        if isinstance(ev, UsageEvent):
            self.usage = ev.usage
            return b""
        if isinstance(ev, FinishEvent):
            self.finish = ev.reason
            return self._close_all()
        return self.error(ev.error)

    # --- items ---------------------------------------------------------------

    def _open(self, kind: str, item: dict[str, Any], call_id: str = "", name: str = "") -> tuple[_Item, bytes]:
        opened = _Item(kind, self.count, call_id, name)
        self.count += 1
        item["id"] = opened.id
        return opened, self._event("response.output_item.added", output_index=opened.index, item=item)

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self.open is None or self.open.kind != kind:
            out += self._close_all()
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "message" \
                else {"type": "reasoning_text", "text": ""}
            item = message_item("", "", "in_progress") if kind == "message" else reasoning_item("", "", "in_progress")
            item["content"] = []
            self.open, added = self._open(kind, item)
            out += added + self._event("response.content_part.added", item_id=self.open.id,
                                       output_index=self.open.index, content_index=0, part=part)
        self.open.text += text
        delta = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        return out + self._event(delta, item_id=self.open.id, output_index=self.open.index,
                                 content_index=0, delta=text, **extra)

    def _tool(self, ev: ToolCallDelta) -> bytes:
        out = b""
        item = self.calls.get(ev.index)
        if item is None:  # a new call: the ones before it are complete (upstreams stream them in turn)
            out += self._close_all()
            fields = function_call_item(self.call, "", ev.id or f"call_{ev.index}", ev.name or "", "",
                                        "in_progress")
            item, added = self._open("function_call", fields, fields["call_id"], ev.name or "")
            self.calls[ev.index] = item
            out += added
        if ev.arguments:
            item.text += ev.arguments
            if item.done is not None:  # a late piece of a call already closed: keep it whole
                item.done["arguments"] = item.text
            out += self._event("response.function_call_arguments.delta", item_id=item.id,
                               output_index=item.index, delta=ev.arguments)
        return out

    def _close_text(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        if item.kind == "message":
            done = message_item(item.id, item.text)
            part = done["content"][0]
            out = self._event("response.output_text.done", item_id=item.id, output_index=item.index,
                              content_index=0, text=item.text, logprobs=[])
        else:
            done = reasoning_item(item.id, item.text)
            part = done["content"][0]
            out = self._event("response.reasoning_text.done", item_id=item.id, output_index=item.index,
                              content_index=0, text=item.text)
        out += self._event("response.content_part.done", item_id=item.id, output_index=item.index,
                           content_index=0, part=part)
        return out + self._done(item, done)

    def _done(self, item: _Item, done: dict[str, Any]) -> bytes:
        self.output.append(done)  # items close in the order they opened
        return self._event("response.output_item.done", output_index=item.index, item=done)

    def _close_all(self) -> bytes:
        out = self._close_text()
        for item in self.calls.values():
            if item.done is None:
                arguments = item.text or "{}"
                item.done = function_call_item(self.call, item.id, item.call_id, item.name, arguments)
                out += self._event("response.function_call_arguments.done", item_id=item.id,
                                   output_index=item.index, arguments=arguments)
                out += self._done(item, item.done)
        return out

    # --- the end -------------------------------------------------------------

    def error(self, error: WardenError) -> bytes:
        self.failed = True
        out = self._event("error", code=error.code, message=error.message, param=error.param)
        # response.error.code is a closed set at OpenAI: Warden's own code rides in the error event.
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        return out + self._event("response.failed", response=self._response(
            "failed", usage=self.usage, error={"code": code, "message": error.message}))

    def end(self) -> bytes:
        """After the last event: ``response.completed`` (or ``incomplete``), or the error."""
        if self.failed:
            return b""
        if self.finish is None:  # the stream stopped without saying why: say so
            return self.error(incomplete_stream())
        self.final = self._response("completed", usage=self.usage or Usage(), finish=self.finish)
        kind = "response.incomplete" if self.final["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=self.final)
