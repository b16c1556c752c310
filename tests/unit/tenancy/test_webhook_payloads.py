"""The webhook body formats and the signature a receiver checks."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from warden.tenancy.webhook_payloads import body, headers, signature, slack_message, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    raw = b'{"type":"webhook.test"}'
    expected = hmac.new(b"whsec_example-secret", b"1700000000." + raw, hashlib.sha256).hexdigest()
    assert signature("whsec_example-secret", "1700000000", raw) == "sha256=" + expected
    h = headers("whsec_example-secret", event_type="webhook.test", delivery_id="whd_1", timestamp="1700000000",
                body=raw)
    assert (h["x-warden-event"], h["x-warden-delivery"], h["x-warden-timestamp"]) == (
        "webhook.test", "whd_1", "1700000000")
    assert verify("whsec_example-secret", "1700000000", raw, h["x-warden-signature"])
    assert not verify("whsec_example-secret", "1700000000", raw + b" ", h["x-warden-signature"])


def test_warden_format_is_the_envelope_itself() -> None:
    payload = {"id": "evt_1", "type": "agent.tier_changed", "workspace_id": "ws_1", "data": {"to": "intern"}}
    assert orjson.loads(body(payload, "warden")) == payload


def test_slack_messages_say_what_happened() -> None:
    cases = {
        "approval.decided": ({"approval_id": "apr_1", "status": "rejected", "decided_by": "key:k", "note": "no",
                              "agent_id": "agt_1", "tool": "echo"}, "Approval apr_1 rejected by key:k"),
        "agent.tier_changed": ({"agent_id": "agt_1", "from": "student", "to": "intern", "reason": "evidence"},
                               "Agent agt_1 moved from student to intern"),
        "budget.threshold": ({"threshold": 80, "scope": "workspace", "scope_id": "ws_1", "spent_usd": "8",
                              "limit_usd": "10", "period": "month"},
                             "Budget at 80%: workspace ws_1, $8 of $10 this month"),
    }
    for event_type, (data, text) in cases.items():
        msg = slack_message({"id": "evt_1", "type": event_type, "workspace_id": "ws_1", "data": data})
        assert msg["text"] == text and msg["blocks"][0]["text"]["text"] == f"*{text}*"
        assert "evt_1" in msg["blocks"][-1]["elements"][0]["text"]
    decided = slack_message({"type": "approval.decided", "data": cases["approval.decided"][0]})
    assert "Note: no" in decided["blocks"][1]["text"]["text"]
    assert slack_message({"type": "other.thing", "data": {}})["text"] == "Warden event other.thing"
