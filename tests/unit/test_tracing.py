"""warden.tracing: when traces are on, and what a failed or cancelled call's span says."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from warden import tracing
from warden.gateway.context import CallContext
from warden.gateway.errors import Overloaded
from warden.tracing.otel import OtelTracer

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    (ENDPOINT, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
])
def test_enabled_by_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert tracing.enabled(env) is on


def test_configure_is_shared_and_released_by_its_last_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing is exported
    assert tracing.configure(ENDPOINT) and tracing.configure(ENDPOINT)
    first = tracing.TRACER
    assert isinstance(first, OtelTracer)
    tracing.release()
    assert tracing.TRACER is first
    tracing.release()
    assert tracing.TRACER is None
    assert tracing.configure({}) is False and tracing.TRACER is None


async def _failing(error: BaseException) -> tuple[None, None]:
    raise error


async def test_a_failed_call_is_told_by_code_never_by_message() -> None:
    exporter = InMemorySpanExporter()
    tracer = OtelTracer.from_environment(exporter)
    ctx = CallContext(workspace_id="ws_1", api_key_id="key_1", request_id="req_1")
    secret = "sk-live-leaked-0123456789abcdef"
    with pytest.raises(Overloaded):
        await tracer.call("chat", "gpt-4o-mini", ctx, _failing(
            Overloaded(f"upstream said: bad key {secret}", provider="openai", upstream_status=500)))
    ctx2 = CallContext(workspace_id="ws_1", api_key_id=None, request_id="req_2")
    with pytest.raises(asyncio.CancelledError):
        await tracer.call("chat", "gpt-4o-mini", ctx2, _failing(asyncio.CancelledError()))
    tracer.shutdown()
    failed, cancelled = sorted(exporter.get_finished_spans(), key=lambda s: s.attributes["warden.request_id"])
    assert failed.attributes["error.type"] == "upstream_overloaded"
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == "Overloaded"
    assert secret not in repr(failed.to_json()) and not failed.events
    assert cancelled.attributes["error.type"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET  # a client that left is no fault
    assert "warden.api_key_id" not in cancelled.attributes
