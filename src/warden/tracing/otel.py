"""The spans, made with the OpenTelemetry SDK; imported only when tracing is on.

A gateway request is one span named ``{operation} {requested model}`` (SERVER; INTERNAL
when an agent run called it in-process), with one CLIENT child per upstream attempt,
named after the upstream model. An agent run's execution is one ``invoke_agent {agent}``
span, current in the run's task, so its model calls (the gateway's request spans) and
tool calls (``execute_tool {tool}``) are its children. A run paused for a human ends its
span; the execution that goes on after the decision is a new one (``warden.run.id`` ties
them). Attribute names follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``:
provider, models, tokens, operation, agent, tool); what they do not name is ``warden.*``
(cost, attempts, deployment, the tool's level, decision, rule and who decided).

Nothing of a prompt, reply, tool argument or result goes into a span, and an error is
told by its type and code, never its message: a trace backend is not a secret store.
A streamed attempt's span ends at the first token (until then it may fail over); the
request's span ends when the stream does, with what it streamed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger("warden.tracing")
_T = TypeVar("_T")
_TOOL_ERRORS = ("failed", "timeout", "interrupted")  # a denied or rejected call is the policy working


class _Attempt:
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def ended(self, error: BaseException | None) -> None:
        if error is not None:
            _error(self.span, error)
        self.span.end()


class _Request:
    __slots__ = ("_tracer", "operation", "span")

    def __init__(self, tracer: trace.Tracer, operation: str, span: Span) -> None:
        self._tracer = tracer
        self.operation = operation
        self.span = span

    def attempt(self, dep: Any, number: int, base_url: str) -> _Attempt:
        url = urlsplit(base_url)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": self.operation, "gen_ai.provider.name": dep.provider,
            "gen_ai.request.model": dep.model, "warden.attempt": number, "warden.deployment": dep.id,
        }
        if url.hostname:
            attrs["server.address"] = url.hostname
            if url.port:
                attrs["server.port"] = url.port
        return _Attempt(self._tracer.start_span(
            f"{self.operation} {dep.model}", context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT, attributes=attrs))

    def served(self, info: Any, status: str = "ok") -> None:
        span, u = self.span, info.usage
        attrs: dict[str, Any] = {
            "gen_ai.provider.name": info.provider, "gen_ai.response.model": info.model,
            "gen_ai.usage.input_tokens": u.input_tokens, "gen_ai.usage.output_tokens": u.output_tokens,
            "warden.attempts": info.attempts, "warden.deployment": info.deployment_id,
            "warden.fallback": info.fallback, "warden.overhead_ms": info.overhead_ms,
        }
        if u.cache_read_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = u.cache_read_tokens
        if info.cost_usd is not None:  # unknown price: no attribute, never a made-up 0
            attrs["warden.cost_usd"] = float(info.cost_usd)
        if info.ttft_ms is not None:
            attrs["warden.ttft_ms"] = info.ttft_ms
        if status != "ok":
            attrs["warden.status"] = status
            if status.startswith("stream_error"):
                attrs["error.type"] = status.partition(":")[2] or status
                span.set_status(Status(StatusCode.ERROR, "stream_error"))
        span.set_attributes(attrs)
        span.end()

    def failed(self, error: BaseException) -> None:
        provider = getattr(error, "provider", None)
        if provider:
            self.span.set_attribute("gen_ai.provider.name", provider)
        attempts = getattr(error, "attempts", None)
        if attempts:
            self.span.set_attribute("warden.attempts", attempts)
        _error(self.span, error)
        self.span.end()


class _Tool:
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def ended(self, call: Any) -> None:
        self.span.set_attribute("warden.tool.status", call.status)
        if call.status in _TOOL_ERRORS:
            self.span.set_attribute("error.type", call.status)
            self.span.set_status(Status(StatusCode.ERROR, call.status))
        self.span.end()


class OtelTracer:
    """:class:`warden.tracing.Tracer` over a tracer provider of Warden's own."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("warden")

    @classmethod
    def from_environment(cls, exporter: SpanExporter | None = None) -> OtelTracer:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                  os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
        if protocol != "http/protobuf":
            log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: Warden exports http/protobuf only", protocol)
        resource = Resource.create()  # reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "warden"}))
        provider = TracerProvider(resource=resource)
        # The exporter reads the endpoint (``/v1/traces`` added to the generic one), headers,
        # timeout and compression from the environment; the processor its OTEL_BSP_* limits.
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        return cls(provider)

    def _request(self, operation: str, model: str, ctx: Any, *, stream: bool) -> _Request:
        inside = trace.get_current_span().get_span_context().is_valid  # an agent run's model call
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation, "gen_ai.request.model": model,
            "warden.request_id": ctx.request_id, "warden.workspace_id": ctx.workspace_id,
            "warden.stream": stream,
        }
        if ctx.api_key_id:
            attrs["warden.api_key_id"] = ctx.api_key_id
        if ctx.agent_id:
            attrs["gen_ai.agent.id"] = ctx.agent_id
        if ctx.session_id:
            attrs["gen_ai.conversation.id"] = ctx.session_id
        span = self._tracer.start_span(f"{operation} {model}", attributes=attrs,
                                       kind=SpanKind.INTERNAL if inside else SpanKind.SERVER)
        ctx.trace = request = _Request(self._tracer, operation, span)
        return request

    async def call(self, operation: str, model: str, ctx: Any,
                   serve: Awaitable[tuple[_T, Any]]) -> tuple[_T, Any]:
        request = self._request(operation, model, ctx, stream=False)
        try:
            result, info = await serve
        except BaseException as exc:
            request.failed(exc)
            raise
        request.served(info)
        return result, info

    async def open_stream(self, model: str, ctx: Any, opening: Awaitable[_T]) -> _T:
        """Until the stream is open; the stream itself ends the span (``served``)."""
        request = self._request("chat", model, ctx, stream=True)
        try:
            return await opening
        except BaseException as exc:
            request.failed(exc)
            raise

    async def run(self, agent: Any, run: Any, execute: Coroutine[Any, Any, _T], *, first_step: int) -> _T:
        span = self._tracer.start_span(f"invoke_agent {agent.name}", kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent.id,
            "gen_ai.agent.name": agent.name, "gen_ai.conversation.id": run.session_id,
            "warden.run.id": run.id, "warden.workspace_id": run.workspace_id,
            "warden.agent.tier": agent.tier, "warden.run.first_step": first_step,
        })
        token = otel_context.attach(trace.set_span_in_context(span))  # the run's own task
        try:
            outcome: Any = await execute
        except BaseException as exc:
            _error(span, exc)
            raise
        else:
            _outcome(span, outcome)
        finally:
            otel_context.detach(token)
            span.end()
        return outcome

    def tool(self, call: Any) -> _Tool:
        decision = call.decision
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.call.name[:128],
                                 "gen_ai.tool.call.id": call.call.id, "gen_ai.tool.type": "function"}
        if call.level is not None:
            attrs["warden.tool.level"] = call.level
        if decision is not None:
            attrs["warden.decision"] = decision.outcome
            attrs["warden.rule"] = decision.rule
        if call.decided_by:  # the human who approved (or rejected) it
            attrs["warden.decided_by"] = call.decided_by
        return _Tool(self._tracer.start_span(f"execute_tool {call.call.name[:128]}", kind=SpanKind.INTERNAL,
                                             attributes=attrs))

    def shutdown(self) -> None:
        """Export what is batched (bounded by the exporter's timeout), then stop."""
        try:
            self._provider.shutdown()
        except Exception:  # a collector gone at shutdown must not fail the stop
            log.warning("flushing traces at shutdown failed", exc_info=True)


def _outcome(span: Span, outcome: Any) -> None:
    attrs: dict[str, Any] = {"warden.run.status": outcome.status}
    usage = outcome.usage or {}
    if usage:
        attrs["gen_ai.usage.input_tokens"] = usage.get("input_tokens", 0)
        attrs["gen_ai.usage.output_tokens"] = usage.get("output_tokens", 0)
    if outcome.cost_usd is not None:
        attrs["warden.cost_usd"] = float(outcome.cost_usd)
    if outcome.model:
        attrs["gen_ai.response.model"] = outcome.model
    if outcome.error:
        attrs["error.type"] = outcome.error.get("code") or outcome.error.get("type") or "error"
        span.set_status(Status(StatusCode.ERROR, str(attrs["error.type"])))
    span.set_attributes(attrs)


def _error(span: Span, error: BaseException) -> None:
    """The error's type and code only: its message may quote what the upstream said."""
    code = getattr(error, "code", None)
    kind = "cancelled" if isinstance(error, asyncio.CancelledError) else str(code or type(error).__name__)
    span.set_attribute("error.type", kind)
    status = getattr(error, "status", None)
    if isinstance(status, int):  # the status Warden answers with
        span.set_attribute("warden.error.status", status)
    upstream = getattr(error, "upstream_status", None)
    if isinstance(upstream, int):  # the one the provider answered with
        span.set_attribute("http.response.status_code", upstream)
    if kind != "cancelled":  # a client that left is not a fault
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
