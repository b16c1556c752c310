"""An open stream, committed to one deployment once its first token arrived.

Its ledger row is what was streamed: the provider's usage when it arrived. A
stream that failed or was cancelled mid-way (or a provider that sends no usage)
is recorded with the provider's input count, else the prompt estimate, and the
output tokens counted from the streamed text (or the provider's count if larger),
priced like any call. The budget is settled
with that same cost, so ``/api/usage`` and the budgets agree. A stream that ends
normally has its row committed (see ``store/spend.py``) before its last event
leaves, so the client's closing frame comes after the row is durable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

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
Meter = Callable[[CallInfo, str], Awaitable[Any] | None]  # returns what commits the row, if any


class GatewayStream:
    """An open stream, committed to one deployment (its first token has arrived).

    Iterating yields the content events, then usage and finish. A failure after
    the first token arrives as one :class:`ErrorEvent`, and the stream ends:
    never a silent truncation, never a replay from another deployment.
    """

    def __init__(self, dep: Deployment, info: CallInfo, events: AsyncIterator[StreamEvent],
                 head: list[StreamEvent], *, record: RecordHealth, price: Price, meter: Meter,
                 admission: Admission | None = None,
                 prompt_tokens: Callable[[], int] = lambda: 0, trace: Any = None) -> None:
        self._trace = trace  # the request's span (warden.tracing), ended with the stream
        self._record = record
        self._prompt_tokens = prompt_tokens  # the request's estimate, for a row without usage
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
        if status != "ok" or not (usage.input_tokens or usage.output_tokens):
            usage = self.info.usage = self._consumed(usage)
        self.info.cost_usd = self._price(usage)
        committed = self._meter(self.info, status)
        if self._trace is not None:
            self._trace.served(self.info, status)
        if self._admission.active:
            await shielded(self._admission.settle(self.info.cost_usd, usage, self._dep,
                                                   output_seen=self._output_seen))
        if committed is not None and status != "cancelled":
            # Under cancellation the client is gone: the row is queued, nobody waits for it.
            await asyncio.shield(committed)

    def _consumed(self, usage: Usage) -> Usage:
        """What a stream cut short (or one without usage) consumed: the provider's input
        count, else the prompt estimate; at least the output counted from what was streamed
        (a provider's count so far, as in Anthropic's ``message_start``, may lag it)."""
        return replace(usage, input_tokens=usage.input_tokens or self._prompt_tokens(),
                       output_tokens=max(usage.output_tokens, self._output_seen))

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

