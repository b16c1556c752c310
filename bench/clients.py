"""Minimal HTTP clients for measuring: keep-alive sequential calls (stdlib
``http.client``, the same client for every target so its cost cancels out in a
difference), SSE timing, and many concurrent raw streams on asyncio."""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson

from bench.procs import HOST


@dataclass
class Target:
    """Something that answers ``POST {path}`` in OpenAI format."""

    name: str
    port: int
    model: str
    key: str | None = None
    path: str = "/v1/chat/completions"
    extra: dict[str, str] = field(default_factory=dict)  # more request headers (Portkey's routing)
    netns: str | None = None  # /proc/<pid>/ns/net when it listens in another network namespace

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", **self.extra}
        if self.key:
            h["authorization"] = f"Bearer {self.key}"
        return h

    def body(self, *, stream: bool = False, text: str = "Say hello to the benchmark") -> bytes:
        payload: dict = {"model": self.model, "messages": [{"role": "user", "content": text}]}
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)


_CLONE_NEWNET = 0x40000000


@contextmanager
def in_netns(path: str | None) -> Iterator[None]:
    """Sockets made in the block belong to that network namespace (a socket keeps the
    namespace it was created in, so the connection stays usable after it)."""
    if path is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    other = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(other, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        yield
    finally:
        libc.setns(own, _CLONE_NEWNET)
        os.close(own)
        os.close(other)


class _HTTPConnection(http.client.HTTPConnection):
    """Connects (and reconnects) inside the target's network namespace, if it has one."""

    def __init__(self, netns: str | None, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.netns = netns

    def connect(self) -> None:
        with in_netns(self.netns):
            super().connect()


class Conn:
    """One keep-alive connection to a target."""

    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self.t = target
        self.c = _HTTPConnection(target.netns, HOST, target.port, timeout=timeout)
        self.headers = target.headers()
        self.last_headers: dict[str, str] = {}

    def post(self, body: bytes) -> tuple[int, dict[str, str], bytes, float]:
        t0 = time.perf_counter()
        self.c.request("POST", self.t.path, body=body, headers=self.headers)
        r = self.c.getresponse()
        data = r.read()
        elapsed = time.perf_counter() - t0
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, elapsed

    def stream(self, body: bytes) -> StreamTiming:
        t0 = time.perf_counter()
        self.c.request("POST", self.t.path, body=body, headers=self.headers)
        r = self.c.getresponse()
        self.last_headers = {k.lower(): v for k, v in r.getheaders()}
        out = StreamTiming(status=r.status)
        last = None
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            data = line[6:].strip()
            if data == b"[DONE]":
                out.done = True
                continue
            chunk = orjson.loads(data)
            choices = chunk.get("choices") or []
            kind = chunk.get("type")  # a Responses stream: typed events, no [DONE]
            out.done = out.done or kind == "response.completed"
            if (choices and (choices[0].get("delta") or {}).get("content")) or (
                    kind == "response.output_text.delta" and chunk.get("delta")):
                out.chunks += 1
                if last is None:
                    out.ttft_s = now - t0
                else:
                    out.gaps_s.append(now - last)
                last = now
        r.read()
        out.total_s = time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.c.close()


@dataclass
class StreamTiming:
    status: int
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    chunks: int = 0  # chunks carrying content
    done: bool = False
    total_s: float = 0.0


async def raw_stream(target: Target, body: bytes, timeout: float) -> bool:
    """One streamed request on its own connection, read to the end; True if complete."""
    head = (f"POST {target.path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in target.headers().items())
            + f"content-length: {len(body)}\r\n\r\n").encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, target.port)
            writer.write(head + body)
            data = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return False
    return data.startswith(b"HTTP/1.1 200") and b"[DONE]" in data


async def many_streams(target: Target, n: int, timeout: float) -> int:
    """``n`` concurrent streams; returns how many completed."""
    body = target.body(stream=True)
    results = await asyncio.gather(*(raw_stream(target, body, timeout) for _ in range(n)))
    return sum(results)
