"""History repair and windowing (pure functions over stored rows and messages)."""

from __future__ import annotations

from warden.agents.sessions import (
    MISSING_RESULT,
    estimate_message_tokens,
    split_turns,
    to_model_messages,
    window,
)
from warden.gateway.types import Message, ToolCall
from warden.store.agent_models import Message as Row


def row(seq: int, role: str, content: str | None = None, **kw: object) -> Row:
    return Row(id=f"m{seq}", session_id="s", workspace_id="w", seq=seq, role=role, content=content, **kw)


def test_rows_become_model_messages_with_tool_calls_and_results() -> None:
    msgs = to_model_messages([
        row(1, "user", "hi"),
        row(2, "assistant", None, tool_calls=[{"id": "c1", "name": "echo", "arguments": '{"a":1}'}]),
        row(3, "tool", '{"ok":1}', tool_call_id="c1", name="echo"),
        row(4, "assistant", "done"),
    ])
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1].tool_calls == [ToolCall("c1", "echo", '{"a":1}')] and msgs[1].content == []
    assert msgs[2].tool_call_id == "c1" and msgs[2].text_content == '{"ok":1}'
    assert msgs[3].text_content == "done"


def test_unanswered_tool_call_gets_a_placeholder_and_orphans_are_dropped() -> None:
    msgs = to_model_messages([
        row(1, "tool", "orphan", tool_call_id="zz"),
        row(2, "user", "hi"),
        row(3, "assistant", "let me", tool_calls=[{"id": "a", "name": "t"}, {"id": "b", "name": "t"}]),
        row(4, "tool", "A", tool_call_id="a"),
        row(5, "user", "again"),
    ])
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    assert msgs[3].tool_call_id == "b" and msgs[3].text_content == MISSING_RESULT and msgs[3].name == "t"
    assert msgs[1].tool_calls[0].arguments == "{}"


def test_unanswered_call_at_the_end_is_closed_too() -> None:
    msgs = to_model_messages([row(1, "user", "x"),
                              row(2, "assistant", None, tool_calls=[{"id": "a", "name": "t"}])])
    assert msgs[-1].role == "tool" and msgs[-1].text_content == MISSING_RESULT


def test_split_turns_keeps_tool_traffic_in_its_turn() -> None:
    u1, a1 = Message.text("user", "q1"), Message(role="assistant", tool_calls=[ToolCall("c", "t")])
    t1 = Message(role="tool", tool_call_id="c")
    u2 = Message.text("user", "q2")
    assert split_turns([u1, a1, t1, u2]) == [[u1, a1, t1], [u2]]
    lead = Message.text("assistant", "welcome")
    assert split_turns([lead, u1]) == [[lead], [u1]]


def turn(i: int, words: int) -> list[Message]:
    return [Message.text("user", f"question {i} " + "x " * words), Message.text("assistant", f"answer {i}")]


def test_window_drops_oldest_whole_turns_first() -> None:
    history = turn(1, 100) + turn(2, 10) + turn(3, 10) + [Message.text("user", "now")]
    cost = lambda ms: sum(estimate_message_tokens(m) for m in ms)
    budget = cost(turn(2, 10) + turn(3, 10) + [Message.text("user", "now")])
    kept = window(history, budget)
    assert kept == turn(2, 10) + turn(3, 10) + [Message.text("user", "now")]
    assert window(history, budget + 10_000) == history


def test_window_is_contiguous_and_always_keeps_the_newest_turn() -> None:
    history = turn(1, 1) + turn(2, 500) + [Message.text("user", "now " * 1000)]
    # The newest turn alone exceeds the budget: it stays; older ones go, even a small one.
    assert window(history, 10) == [Message.text("user", "now " * 1000)]
    assert window([], 10) == []


def test_tool_call_never_separated_from_its_result() -> None:
    call = Message(role="assistant", tool_calls=[ToolCall("c", "t", '{"q": "' + "y" * 400 + '"}')])
    result = Message(role="tool", content=[], tool_call_id="c")
    history = [Message.text("user", "a"), call, result, Message.text("user", "b")]
    kept = window(history, estimate_message_tokens(history[-1]) + estimate_message_tokens(result) + 5)
    assert kept == [Message.text("user", "b")]
