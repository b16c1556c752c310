"""A run's timeline, replayed from what is stored: its events (``run_events``; the
text deltas joined into one message per stretch), its model calls (``runs.steps``,
each with its cost), its tool calls with the governance decision and, for one that
needed a human, who decided and when (``tool_calls`` + ``approvals``), and errors.

Pure functions over rows already authorized by ``Runs.get``: the page reads, this
shapes. Every tool argument and result passes the console's masking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from warden.console.masking import mask_secrets, pretty

DELTA = "message.delta"
_SHOWN_CHARS = 4000  # a long reply or tool result is cut for the page, not in the store


@dataclass(slots=True)
class Entry:
    seq: int
    at: datetime
    kind: str  # the event type, or "message" for joined deltas
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + " …"


def event_entries(rows: list[Any]) -> list[Entry]:
    """Stored events in order; consecutive text deltas become one "message" entry."""
    entries: list[Entry] = []
    for row in rows:
        data = dict(row.data or {})
        if row.type == DELTA:
            if entries and entries[-1].kind == "message":
                entries[-1].text += str(data.get("text", ""))
            else:
                entries.append(Entry(row.seq, row.created_at, "message", str(data.get("text", ""))))
            continue
        entries.append(Entry(row.seq, row.created_at, row.type, data=mask_secrets(data)))
    for entry in entries:
        entry.text = _cut(mask_secrets(entry.text)) if entry.text else ""
    return entries


def model_calls(run: Any) -> list[dict[str, Any]]:
    """One row per model call of the run, with tokens and cost (None: no price known)."""
    calls = []
    for step in run.steps or []:
        usage = step.get("usage") or {}
        calls.append({"step": step.get("step"), "provider": step.get("provider"), "model": step.get("model"),
                      "input_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
                      "output_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
                      "cost_usd": step.get("cost_usd"), "latency_ms": step.get("latency_ms"),
                      "finish_reason": step.get("finish_reason")})
    return calls


def tool_calls(calls: list[Any], approvals: dict[str, Any]) -> list[dict[str, Any]]:
    """Each action: masked arguments and result, the decision and its rule, who approved."""
    shown = []
    for c in calls:
        a = approvals.get(c.id)
        shown.append({"name": c.name, "step": c.step, "arguments": _cut(pretty(_json_or_text(c.arguments))),
                      "risk_level": c.risk_level, "decision": c.decision, "rule": c.rule, "reason": c.reason,
                      "status": c.status, "is_error": c.is_error,
                      "result": _cut(pretty(_json_or_text(c.result))) if c.result else "",
                      "started_at": c.started_at, "ended_at": c.ended_at,
                      "approval": None if a is None else {"status": a.status, "decided_by": a.decided_by,
                                                           "decided_at": a.decided_at, "note": a.note}})
    return shown


def _json_or_text(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # the model may send malformed arguments: shown as they came (masked)
