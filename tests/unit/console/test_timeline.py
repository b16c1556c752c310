"""A run's timeline from stored rows: text deltas joined per stretch, tool arguments and
results masked (also when they are JSON in a string, as the tool_calls table keeps
them), malformed arguments shown as sent, model calls with their cost."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from warden.console.timeline import event_entries, model_calls, tool_calls

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _event(seq: int, type_: str, **data: object) -> SimpleNamespace:
    return SimpleNamespace(seq=seq, type=type_, data=data, created_at=AT)


def test_deltas_are_joined_until_another_event_and_secret_names_are_masked() -> None:
    entries = event_entries([
        _event(1, "run.started", agent="a"), _event(2, "message.delta", text="Hel"),
        _event(3, "message.delta", text="lo"), _event(4, "tool.call", name="echo", api_token="tok-1"),
        _event(5, "message.delta", text="done"), _event(6, "run.completed"),
    ])
    assert [(e.seq, e.kind, e.text) for e in entries] == [
        (1, "run.started", ""), (2, "message", "Hello"), (4, "tool.call", ""), (5, "message", "done"),
        (6, "run.completed", "")]
    assert entries[2].data == {"name": "echo", "api_token": "***"}


def test_tool_calls_mask_json_text_and_keep_malformed_arguments_and_the_approver() -> None:
    call = SimpleNamespace(id="tc1", name="mail", step=1, arguments='{"to": "a@b", "password": "pw-1"}',
                           risk_level=2, decision="approve", rule="level", reason=None, status="completed",
                           is_error=False, result='{"sent": true, "token": "t-9"}', started_at=AT, ended_at=AT)
    broken = SimpleNamespace(**{**vars(call), "id": "tc2", "arguments": '{"to": ', "result": None})
    approval = SimpleNamespace(status="approved", decided_by="key:key_1", decided_at=AT, note="ok")
    [shown, raw] = tool_calls([call, broken], {"tc1": approval})
    assert "pw-1" not in shown["arguments"] and '"password": "***"' in shown["arguments"]
    assert "t-9" not in shown["result"] and '"sent": true' in shown["result"]
    assert shown["approval"] == {"status": "approved", "decided_by": "key:key_1", "decided_at": AT, "note": "ok"}
    assert raw["arguments"] == '{"to": ' and raw["approval"] is None and raw["result"] == ""


def test_model_calls_read_both_usage_spellings_and_keep_an_unknown_cost() -> None:
    run = SimpleNamespace(steps=[
        {"step": 1, "provider": "openai", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 4},
         "cost_usd": "0.000001", "latency_ms": 12.5, "finish_reason": "tool_calls"},
        {"step": 2, "provider": "openai", "model": "m", "usage": {"prompt_tokens": 5, "completion_tokens": 6},
         "cost_usd": None},
    ])
    calls = model_calls(run)
    assert [(c["input_tokens"], c["output_tokens"], c["cost_usd"]) for c in calls] == [
        (3, 4, "0.000001"), (5, 6, None)]
