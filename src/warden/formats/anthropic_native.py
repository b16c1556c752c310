"""What an Anthropic client sends that only Anthropic can honour: the field
policy of the Messages edge, the ``anthropic-version`` / ``anthropic-beta``
headers, and what is named as dropped when another format serves the request.

Every top-level field of the current Messages API (``anthropic`` SDK 2.x, beta
params included) is in exactly one class; any other field is a 400 naming it,
so nothing is dropped silently:

- parsed and honoured by every format (``MessagesBody``): model, max_tokens,
  messages, system, tools, tool_choice, stop_sequences, temperature, top_p,
  thinking, output_config, output_format, metadata (``user_id``), stream;
- ``HINTS``: passed on verbatim to an Anthropic deployment; another format
  serves the request without them (the reply is still right, only less
  optimised) and names them in ``x-warden-dropped-fields``: cache_control,
  service_tier, speed (``standard``), top_k, diagnostics, context_management,
  compaction (Claude Code sends context_management on every request);
- ``REQUIRED``: passed on to an Anthropic deployment, and only those are tried
  (state or features Anthropic itself runs): container, mcp_servers, thread,
  inference_geo (where the data may be processed);
- ``REFUSED``: always a 400, with the reason: fields about the operator's
  Anthropic account, which a Warden client does not own (workspace_id,
  billing_policy, fallback_credit_token, user_profile_id), Anthropic-side model
  ``fallbacks`` (use ``warden.fallbacks``: Warden meters what it routes) and
  ``speed: "fast"`` (priced apart, which Warden cannot meter).

``anthropic-version`` and ``anthropic-beta`` go on to Anthropic deployments as
sent. Another format honours the betas in ``CROSS_FORMAT_BETAS`` (Warden does
what they ask itself) and names the rest in ``x-warden-dropped-betas``: a beta
is never a reason to refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warden.errors import InvalidRequest
from warden.gateway.types import Native

HINTS = frozenset({"cache_control", "service_tier", "speed", "top_k", "diagnostics", "context_management",
                   "compaction"})
REQUIRED = frozenset({"container", "mcp_servers", "thread", "inference_geo"})
_ACCOUNT = "concerns the operator's Anthropic account, not a Warden client's"
REFUSED = {
    "workspace_id": _ACCOUNT, "billing_policy": _ACCOUNT, "fallback_credit_token": _ACCOUNT,
    "user_profile_id": _ACCOUNT,
    "fallbacks": "Anthropic-side model fallbacks are not metered by Warden; use warden.fallbacks",
}
# Prefixes of betas Warden honours whatever format serves the request.
CROSS_FORMAT_BETAS = ("structured-outputs-", "fine-grained-tool-streaming-", "token-counting-")


def native_of(extra: Mapping[str, Any] | None, headers: Mapping[str, str],
              adaptive_thinking: dict[str, Any] | None = None) -> Native | None:
    """The Anthropic-only part of a request: its extra body fields (400 for any field
    the Messages API does not have) and its version and beta headers."""
    body: dict[str, Any] = {}
    for name, value in (extra or {}).items():
        if name in REFUSED or (name == "speed" and value == "fast"):
            reason = REFUSED.get(name, "fast mode is priced apart, which Warden cannot meter")
            raise InvalidRequest(f"{name}: not accepted through Warden ({reason})", param=name,
                                 code="unsupported_field")
        if name not in HINTS and name not in REQUIRED:
            raise InvalidRequest(f"{name}: not a Messages API field Warden knows", param=name,
                                 code="unknown_field")
        body[name] = value
    if adaptive_thinking is not None:
        body["thinking"] = adaptive_thinking
    sent = {k: v for k in ("anthropic-version", "anthropic-beta") if (v := headers.get(k))}
    if not body and not sent:
        return None
    required = tuple(sorted(n for n in body if n in REQUIRED))
    return Native("anthropic", body=body, headers=sent, required=required)


def betas(native: Native | None) -> list[str]:
    raw = native.headers.get("anthropic-beta", "") if native is not None else ""
    return [b.strip() for b in raw.split(",") if b.strip()]


def dropped_headers(native: Native | None, wire: str | None) -> dict[str, str]:
    """``x-warden-dropped-*`` for a request served by a deployment of format ``wire``."""
    if native is None or wire == native.wire:
        return {}
    out: dict[str, str] = {}
    names = sorted(n for n in native.body if n in HINTS)
    if names:
        out["x-warden-dropped-fields"] = ",".join(names)
    lost = [b for b in betas(native) if not b.startswith(CROSS_FORMAT_BETAS)]
    if lost:
        out["x-warden-dropped-betas"] = ",".join(lost)
    return out
