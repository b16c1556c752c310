"""The loopback OpenAI-format simulator as its own process, with a scripted
default behaviour (slow tokens, delays, errors) that the stand-alone
``python -m warden.testing.upstream`` does not expose."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re

from warden.testing.upstream import Behaviour, UpstreamServer

# A model named "slow<ms>-..." streams a long reply with <ms> milliseconds between
# events, so one simulator process serves both fast calls and paced streams.
_SLOW = re.compile(rb'"model":\s*"slow(\d+)-')
LONG_TEXT = " ".join(f"word{i}" for i in range(50))


class PacedUpstream(UpstreamServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._base = self.default
        self._paced: dict[int, Behaviour] = {}

    async def _handle(self, method, url, headers, raw, w):  # type: ignore[no-untyped-def]
        m = _SLOW.search(raw[:200]) if raw else None
        if m is None:
            self.default = self._base
        else:
            ms = int(m.group(1))
            self.default = self._paced.get(ms) or self._paced.setdefault(
                ms, Behaviour(token_delay=ms / 1000, text=LONG_TEXT))
        # The parent takes its behaviour before its first await, so this cannot interleave.
        return await super()._handle(method, url, headers, raw, w)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.upstream_proc")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the headers")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between stream events")
    p.add_argument("--text", default=None)
    args = p.parse_args(argv)
    server = PacedUpstream("openai", port=args.port, record=False, default=Behaviour(
        status=args.status, delay=args.delay, token_delay=args.token_delay, text=args.text))

    async def serve() -> None:
        async with server:
            await asyncio.Event().wait()

    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())


if __name__ == "__main__":
    main()
