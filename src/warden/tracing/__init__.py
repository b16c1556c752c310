"""OpenTelemetry traces of gateway calls and agent runs: off unless an OTLP endpoint is set.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) in the
environment, :func:`configure` builds a tracer provider of Warden's own with a batch
processor exporting OTLP over HTTP/protobuf (:mod:`warden.tracing.otel`). The SDK reads
the standard variables itself: ``OTEL_SERVICE_NAME`` (default ``warden``),
``OTEL_RESOURCE_ATTRIBUTES``, the exporter's headers, timeout and compression, the batch
processor's ``OTEL_BSP_*``. ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
keep it off. The process-wide global provider is left alone, so a library that traces
through it (the MCP SDK does) is not switched on behind the operator's back.

Off, :data:`TRACER` stays None and nothing of the SDK, the exporter or protobuf is
imported: a call site pays one None check (``if tracing.TRACER is not None``). The
OpenTelemetry *API* may be in the process anyway (the MCP SDK imports it); Warden does
not use it then.

Callers see only the small protocols below; their arguments are read by attribute
(``dep.provider``, ``info.usage``...), so this module sits low in the layers and imports
nothing of the gateway or the runtime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

log = logging.getLogger("warden.tracing")
_T = TypeVar("_T")


class AttemptTrace(Protocol):
    """One upstream attempt (a CLIENT span)."""

    def ended(self, error: BaseException | None) -> None: ...


class RequestTrace(Protocol):
    """One gateway request (a SERVER span, INTERNAL inside an agent run)."""

    def attempt(self, dep: Any, number: int, base_url: str) -> AttemptTrace: ...

    def served(self, info: Any, status: str = "ok") -> None: ...

    def failed(self, error: BaseException) -> None: ...


class ToolTrace(Protocol):
    def ended(self, call: Any) -> None: ...


class Tracer(Protocol):
    def call(self, operation: str, model: str, ctx: Any,
             serve: Awaitable[tuple[_T, Any]]) -> Awaitable[tuple[_T, Any]]: ...

    def open_stream(self, model: str, ctx: Any, opening: Awaitable[_T]) -> Awaitable[_T]: ...

    def run(self, agent: Any, run: Any, execute: Coroutine[Any, Any, _T], *,
            first_step: int) -> Coroutine[Any, Any, _T]: ...

    def tool(self, call: Any) -> ToolTrace: ...

    def shutdown(self) -> None: ...


TRACER: Tracer | None = None
_users = 0  # the Services containers of this process that asked for tracing


def enabled(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on if the environment asks for it; True if it is on (call
    :func:`release` once at close). A second container of the process shares the tracer."""
    global TRACER, _users
    if not enabled(os.environ if env is None else env):
        return False
    if TRACER is None:
        from warden.tracing.otel import OtelTracer  # only now: the SDK, exporter, protobuf

        TRACER = OtelTracer.from_environment()
        log.info("OpenTelemetry traces on: OTLP over HTTP/protobuf")
    _users += 1
    return True


def release() -> None:
    """The last user gone: flush what is batched and stop exporting."""
    global TRACER, _users
    _users = max(_users - 1, 0)
    if _users == 0 and TRACER is not None:
        tracer, TRACER = TRACER, None
        tracer.shutdown()
