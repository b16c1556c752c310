"""An open stream, committed to one deployment once its first token arrived."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

from warden.gateway.errors import ProviderError
from warden.gateway.limits import Admission
from warden.gateway.metering import CallInfo
from warden.gateway.deployment import Deployment
from warden.gateway.types import (
    ErrorEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

log = logging.getLogger("warden.gateway")

# What the gateway does for a stream: record health, price usage, write the ledger row.
RecordHealth = Callable[[Deployment, ProviderError | None, float], Awaitable[None]]
Price = Callable[[Usage], Decimal | None]
Meter = Callable[[CallInfo, str], None]


class GatewayStream:
    """An open stream, committed to one deployment (its first token has arrived).

    Iterating yields the content events, then usage and finish. A failure after
    the first token arrives as one :class:`ErrorEvent`, and the stream ends:
    never a silent truncation, never a replay from another deployment.
    """

    def __init__(self, dep: Deployment, info: CallInfo, events: AsyncIterator[StreamEvent],
                 head: list[StreamEvent], *, record: RecordHealth, price: Price, meter: Meter,
                 admission: Admission | None = None) -> None:
        self._record = record
        self._price = price
        self._meter = meter
        self._admission = admission or Admission(None)
        self._output_seen = 0  # rough output tokens streamed, for a settle without usage
        self._dep = dep
        self.info = info
        self._events = events
        self._head = head
        self._done = False
        self._upstream_started = time.perf_counter()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        status = "ok"
        try:
            for event in self._head:
                self._observe(event)
                yield event
            self._head = []
            try:
                async for event in self._events:
                    self._observe(event)
                    yield event
            except ProviderError as exc:
                status = f"stream_error:{exc.code}"[:32]
                await self._record(self._dep, exc, 0.0)
                yield ErrorEvent(exc)
                return
            await self._record(self._dep, None, (time.perf_counter() - self._upstream_started) * 1000)
        except (GeneratorExit, asyncio.CancelledError):
            status = "cancelled"
            raise
        finally:
            await self._finish(status)

    def _observe(self, event: StreamEvent) -> None:
        if isinstance(event, UsageEvent):
            self.info.usage = event.usage
        elif isinstance(event, (TextDelta, ReasoningDelta)):
            self._output_seen += max(1, math.ceil(len(event.text) / 4))
        elif isinstance(event, ToolCallDelta):
            self._output_seen += max(1, math.ceil(len(event.arguments) / 4))

    async def _finish(self, status: str) -> None:
        if self._done:
            return
        self._done = True
        await aclose_events(self._events)
        usage = self.info.usage
        has_usage = usage.input_tokens or usage.output_tokens
        # Without the provider's usage (cancelled early) the cost is unknown, not zero.
        self.info.cost_usd = self._price(usage) if has_usage else None
        self._meter(self.info, status)
        if self._admission.active:  # last: under cancellation this await may be interrupted
            await shielded(self._admission.settle(self.info.cost_usd, usage, self._dep,
                                                   output_seen=self._output_seen))

    async def aclose(self) -> None:
        """Stop early (client went away): closes the upstream connection and meters."""
        await self._finish("cancelled")


async def shielded(op: Awaitable[None]) -> None:
    """Run a settle/release to its end even when the request is being cancelled."""
    await asyncio.shield(op)


async def aclose_events(events: AsyncIterator[StreamEvent]) -> None:
    closer = getattr(events, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # closing a broken stream must not mask the real outcome
            log.debug("closing upstream stream failed", exc_info=True)

