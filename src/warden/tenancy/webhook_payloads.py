"""What a webhook receives: the body in its format (Warden's JSON envelope or a
Slack-compatible message), and the headers that sign it.

The signature is ``X-Warden-Signature: sha256=<hex>``, the HMAC-SHA256 under the
webhook's secret of ``"<X-Warden-Timestamp>.<raw body>"``: a receiver recomputes
it over the bytes it got, compares in constant time, and refuses a timestamp far
from its clock (a replayed delivery).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (kept here so the documentation and the tests agree)."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def headers(secret: str, *, event_type: str, delivery_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "user-agent": "Warden-Webhooks/1",
            "x-warden-event": event_type, "x-warden-delivery": delivery_id,
            "x-warden-timestamp": timestamp, "x-warden-signature": signature(secret, timestamp, body)}


def body(payload: dict[str, Any], fmt: str) -> bytes:
    return orjson.dumps(slack_message(payload) if fmt == "slack" else payload)


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A readable summary for a Slack incoming webhook (``text`` is the notification,
    ``blocks`` the message), with the command that settles an approval."""
    text, detail = _summary(payload.get("type", ""), payload.get("data") or {})
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    if detail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(detail)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                  f"Warden · {payload.get('type')} · workspace {payload.get('workspace_id')} · {payload.get('id')}"}]})
    return {"text": text, "blocks": blocks}


def _summary(event_type: str, d: dict[str, Any]) -> tuple[str, list[str]]:
    if event_type == "approval.required":
        aid = d.get("approval_id", "")
        return (f"Approval needed: agent {d.get('agent_id')} wants to call {d.get('tool')} "
                f"(risk level {d.get('risk_level')})",
                [f"Reason: {d.get('reason') or '-'}",
                 f"Approve: `warden approvals approve {aid}` (or `reject {aid}`)",
                 f"API: `POST /api/approvals/{aid}` with `{{\"decision\": \"approve\"}}`",
                 f"Expires: {d.get('expires_at', '-')}"])
    if event_type == "approval.decided":
        return (f"Approval {d.get('approval_id')} {d.get('status')} by {d.get('decided_by')}",
                [f"Agent {d.get('agent_id')}, tool {d.get('tool')}", *([f"Note: {d['note']}"] if d.get("note") else [])])
    if event_type == "agent.tier_changed":
        return (f"Agent {d.get('agent_id')} moved from {d.get('from')} to {d.get('to')}",
                [f"Why: {d.get('reason') or '-'}", f"Manual: {'yes' if d.get('manual') else 'no'}"])
    if event_type == "budget.threshold":
        return (f"Budget at {d.get('threshold')}%: {d.get('scope')} {d.get('scope_id')}, "
                f"${d.get('spent_usd')} of ${d.get('limit_usd')} this {d.get('period')}", [])
    if event_type == "webhook.test":
        return "Warden test event: this webhook works", []
    return f"Warden event {event_type}", []
