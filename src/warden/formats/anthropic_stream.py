"""Anthropic Messages streams, client side: gateway stream events rendered as
Anthropic's SSE events (``message_start``, content blocks, ``message_delta``,
``message_stop``; an ``error`` event after the first token).

``message_start`` waits for the stream's first event, so its usage carries the
prompt's real input and cache figures when the upstream reported them first
(Anthropic does); otherwise Warden's estimate of the input. ``message_delta``
carries the final usage and cost either way.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from warden.errors import WardenError
from warden.formats import sse
from warden.formats.anthropic import STOP_REASONS, error_body, render_usage
from warden.formats.common import incomplete_stream, served_model
from warden.gateway.types import (
    FinishEvent, FinishReason, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta, Usage, UsageEvent,
)

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo


def frame(kind: str, payload: dict[str, Any]) -> bytes:
    return sse.frame({"type": kind, **payload}, event=kind)


class EventRenderer:
    """Turns stream events into Anthropic SSE frames, one event at a time.

    Blocks open lazily: the first text / thinking / tool piece after a different
    kind closes the open block and starts a new one. Usage arrives before the
    finish event; both go out together in ``message_delta`` from ``end()``.
    """

    def __init__(self, info: CallInfo, *, request_id: str | None = None, input_estimate: int = 0) -> None:
        self.info = info
        self.request_id = request_id
        self.input_estimate = input_estimate  # message_start's input when the upstream says nothing first
        self.started = False
        self.id = f"msg_{uuid.uuid4().hex}"
        self.next_index = 0
        self.open: tuple[str, int] | None = None  # (kind or "tool:<n>", block index)
        self.tool_blocks: dict[int, int] = {}  # internal tool index -> block index
        self.usage = Usage()
        self.finish: FinishReason | None = None
        self.failed = False

    def start(self) -> bytes:
        return b""  # message_start goes out with the first event (see _start)

    def _start(self, first: StreamEvent | None) -> bytes:
        if self.started:
            return b""
        self.started = True
        if isinstance(first, UsageEvent):  # the upstream's own figures for the prompt
            u = first.usage
            cached = u.cache_read_tokens + u.cache_write_tokens
            usage = {"input_tokens": max(u.input_tokens - cached, 0), "output_tokens": u.output_tokens,
                     "cache_creation_input_tokens": u.cache_write_tokens,
                     "cache_read_input_tokens": u.cache_read_tokens}
        else:
            usage = {"input_tokens": self.input_estimate, "output_tokens": 0}
        return frame("message_start", {"message": {
            "id": self.id, "type": "message", "role": "assistant", "model": served_model(self.info),
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage,
        }})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index = self.open[1]
        self.open = None
        return frame("content_block_stop", {"index": index})

    def _switch(self, kind: str, block: dict[str, Any]) -> tuple[bytes, int]:
        """Make ``kind`` the open block, starting it if needed; returns (frames, index)."""
        if self.open is not None and self.open[0] == kind:
            return b"", self.open[1]
        out = self._close()
        index = self.next_index
        self.next_index += 1
        self.open = (kind, index)
        return out + frame("content_block_start", {"index": index, "content_block": block}), index

    def event(self, ev: StreamEvent) -> bytes:
        head = self._start(ev)
        return head + self._event(ev) if head else self._event(ev)

    def _event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            out, index = self._switch("text", {"type": "text", "text": ""})
            return out + frame("content_block_delta", {"index": index,
                                                       "delta": {"type": "text_delta", "text": ev.text}})
        if isinstance(ev, ReasoningDelta):
            out, index = self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + frame("content_block_delta", {"index": index,
                                                       "delta": {"type": "thinking_delta", "thinking": ev.text}})
        if isinstance(ev, ToolCallDelta):
            return self._tool(ev)
        if isinstance(ev, UsageEvent):
            self.usage = ev.usage
            return b""
        if isinstance(ev, FinishEvent):
            self.finish = ev.reason
            return b""
        return self.error(ev.error)

    def _tool(self, ev: ToolCallDelta) -> bytes:
        out = b""
        index = self.tool_blocks.get(ev.index)
        if index is None:
            out, index = self._switch(f"tool:{ev.index}", {
                "type": "tool_use", "id": ev.id or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": ev.name or "", "input": {},
            })
            self.tool_blocks[ev.index] = index
        # A late piece of an earlier call goes to its own block index, which
        # Anthropic clients accumulate by index even after a later block opened.
        if ev.arguments:
            out += frame("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": ev.arguments}})
        return out

    def error(self, error: WardenError) -> bytes:
        self.failed = True
        return frame("error", error_body(error, self.request_id))

    def end(self) -> bytes:
        """Frames after the last event: close the block, ``message_delta``, ``message_stop``."""
        if self.failed:
            return b""
        if self.finish is None:  # the stream stopped without saying why: say so
            return self.error(incomplete_stream())
        return self._start(None) + self._close() + frame("message_delta", {
            "delta": {"stop_reason": STOP_REASONS[self.finish], "stop_sequence": None},
            "usage": render_usage(self.usage, self.info),
        }) + frame("message_stop", {})
