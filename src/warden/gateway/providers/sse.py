"""Reading an upstream's Server-Sent Events: lines out of raw chunks, events out of lines.

Both are plain synchronous objects fed what the socket delivered, so a stream's
read loop (``http.stream_sse``) awaits once per chunk off the wire, not once per
line: a chunk usually holds a whole event (its ``data:`` line and the blank line
that ends it), and every await there costs a deadline and a hop through the
iterator stack. Hand-written because they are a few lines on the hot path of every
stream; the ``httpx-sse`` package would add a dependency for the same loop.
"""

from __future__ import annotations

from dataclasses import dataclass


class LineTooLong(Exception):
    """A line grew past the bound before its end arrived."""


class LineSplitter:
    """Lines of a body as chunks arrive (``\\n``, ``\\r\\n`` or ``\\r`` endings), each at
    most ``limit`` bytes. The pieces of an unfinished line are kept in a list (joined
    once it ends), so a long line costs its size once, not its size times its chunks."""

    __slots__ = ("_parts", "_size", "_held_cr", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._held_cr = False

    @property
    def pending(self) -> bool:
        """Part of a line has arrived, its end not yet."""
        return bool(self._parts) or self._held_cr

    def feed(self, chunk: bytes) -> list[str]:
        if self._held_cr:
            chunk, self._held_cr = b"\r" + chunk, False
        # A CR at the very end may be the first half of a CRLF split across two chunks.
        if chunk.endswith(b"\r"):
            chunk, self._held_cr = chunk[:-1], True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, rest = chunk.split(b"\n")
        limit = self.limit
        out: list[str] = []
        for line in complete:
            if self._parts:
                self._size += len(line)
                if limit is not None and self._size > limit:
                    raise LineTooLong
                self._parts.append(line)
                line, self._parts, self._size = b"".join(self._parts), [], 0
            elif limit is not None and len(line) > limit:
                raise LineTooLong
            out.append(line.decode("utf-8", "replace"))
        if rest:
            self._size += len(rest)
            if limit is not None and self._size > limit:
                raise LineTooLong
            self._parts.append(rest)
        return out

    def close(self) -> list[str]:
        """The last line, when the body ended without a line ending."""
        if not self.pending:
            return []
        line = b"".join(self._parts).decode("utf-8", "replace")
        self._parts, self._size, self._held_cr = [], 0, False
        return [line]


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Feed it lines; it returns an event at each blank line that ends one."""

    __slots__ = ("_data", "_event", "size")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.size = 0  # characters of data held for the event being read

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data, self.size = "", [], 0
            return event
        if line[0] == ":":  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self.size += len(value) + 1
        elif name == "event":
            self._event = value
        return None  # id / retry fields mean nothing to us

    def flush(self) -> SSEEvent | None:
        return self.feed("")
