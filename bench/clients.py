"""Minimal HTTP clients for measuring: keep-alive sequential calls (stdlib
``http.client``, the same client for every target so its cost cancels out in a
difference), SSE timing, and many concurrent raw streams on asyncio."""

from __future__ import annotations

import asyncio
import http.client
import time
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

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.key:
            h["authorization"] = f"Bearer {self.key}"
        return h

    def body(self, *, stream: bool = False, text: str = "Say hello to the benchmark") -> bytes:
        payload: dict = {"model": self.model, "messages": [{"role": "user", "content": text}]}
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)


class Conn:
    """One keep-alive connection to a target."""

    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self.t = target
        self.c = http.client.HTTPConnection(HOST, target.port, timeout=timeout)
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
            if choices and (choices[0].get("delta") or {}).get("content"):
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
