"""``render_stream``: the opening frame leaves in the same write as the first event's
frame (the first token reaches the client in one write); every frame is still there,
in order, also when the stream fails or ends before any event renders."""

from __future__ import annotations

from collections.abc import AsyncIterator

from warden.errors import WardenError
from warden.formats.common import render_stream
from warden.gateway.types import FinishEvent, StreamEvent, TextDelta


class Frames:
    """A wire format whose frames name what they render (the StreamRenderer protocol)."""

    failed = False

    def start(self) -> bytes:
        return b"[start]"

    def event(self, ev: StreamEvent) -> bytes:
        return f"[{ev.text}]".encode() if isinstance(ev, TextDelta) else b""

    def error(self, error: WardenError) -> bytes:
        self.failed = True
        return f"[error {error.code}]".encode()

    def end(self) -> bytes:
        return b"[end]"


async def events(*evs: StreamEvent, fail: WardenError | None = None) -> AsyncIterator[StreamEvent]:
    for ev in evs:
        yield ev
    if fail is not None:
        raise fail


async def frames(stream: AsyncIterator[StreamEvent]) -> list[bytes]:
    return [f async for f in render_stream(stream, Frames())]


async def test_the_opening_frame_leaves_with_the_first_event() -> None:
    got = await frames(events(TextDelta("a"), TextDelta("b")))
    assert got == [b"[start][a]", b"[b]", b"[end]"]


async def test_events_that_render_nothing_do_not_carry_the_opening_away() -> None:
    got = await frames(events(FinishEvent("stop"), TextDelta("a")))
    assert got == [b"[start][a]", b"[end]"]


async def test_a_stream_with_nothing_to_render_still_opens_and_ends() -> None:
    assert await frames(events()) == [b"[start][end]"]


async def test_a_failure_before_the_first_frame_keeps_the_opening() -> None:
    got = await frames(events(fail=WardenError("boom", code="upstream_error", status=502)))
    assert got == [b"[start][error upstream_error]"]
