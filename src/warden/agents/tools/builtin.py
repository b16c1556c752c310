"""The built-in tools: current_time, http_get, http_request, memory_search, memory_save.

Each is a ``FunctionTool``: a pydantic model for its arguments (the JSON Schema
the model sees is generated from it, so schema and validation never drift)
and an async handler. ``BUILTIN_TOOLS`` maps a name to a factory taking the
``ToolDeps``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, ConfigDict, Field

from warden.agents.tools.egress import EgressError, EgressPolicy, FetchResult
from warden.agents.memory import MAX_LIMIT, MAX_TAGS, MAX_TEXT_CHARS, AgentMemoryStore
from warden.agents.tools.base import FunctionTool, ToolContext, ToolResult
from warden.agents.tools.deps import ToolDeps

# Room kept for the JSON around an HTTP body, so the body is cut, not the JSON.
_ENVELOPE_BYTES = 4096
_TEXTUAL = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _json(data: object) -> ToolResult:
    return ToolResult(orjson.dumps(data).decode())


# --- current_time ----------------------------------------------------------------

class CurrentTimeArgs(_Args):
    timezone: str = Field("UTC", description="IANA time zone, e.g. 'Europe/Paris'. Default UTC.")


async def _current_time(args: CurrentTimeArgs, ctx: ToolContext) -> ToolResult:
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ToolResult(f"unknown time zone {args.timezone!r}: use an IANA name such as "
                          "'Europe/Paris' or 'America/New_York'", is_error=True)
    now = datetime.now(UTC).astimezone(zone)
    return _json({
        "timezone": args.timezone,
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
        "unix": int(now.timestamp()),
    })


def current_time_tool(deps: ToolDeps) -> FunctionTool:
    return FunctionTool("current_time", "The current date and time, in a given time zone.",
                        CurrentTimeArgs, _current_time, risk_level=1,
                        max_result_bytes=deps.max_result_bytes)


# --- http_get / http_request -----------------------------------------------------

class HttpGetArgs(_Args):
    url: str = Field(description="An http or https URL.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")


class HttpRequestArgs(HttpGetArgs):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    body: str = Field("", description="Request body (text; set content-type in headers).")


def _body_text(fetched: FetchResult, budget: int) -> tuple[str, bool]:
    ctype = fetched.content_type.lower()
    if ctype and not any(t in ctype for t in _TEXTUAL):
        return f"[{len(fetched.body)} bytes of {ctype} not shown]", False
    charset = "utf-8"
    if "charset=" in ctype:
        charset = ctype.split("charset=", 1)[1].split(";", 1)[0].strip().strip('"') or "utf-8"
    try:
        text = fetched.body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        text = fetched.body.decode("utf-8", errors="replace")
    raw = text.encode("utf-8")
    if len(raw) <= budget:
        return text, False
    return raw[:budget].decode("utf-8", errors="ignore"), True


def _http_result(fetched: FetchResult, max_result_bytes: int) -> ToolResult:
    body, cut_here = _body_text(fetched, max(1024, max_result_bytes - _ENVELOPE_BYTES))
    # An HTTP error status is still a successful tool call: the model reads the status.
    return _json({
        "status": fetched.status,
        "url": fetched.url,
        "redirects": fetched.redirects,
        "headers": {k: v[:512] for k, v in list(fetched.headers.items())[:40]},
        "body": body,
        "truncated": fetched.truncated or cut_here,
    })


def _http_handler(policy: EgressPolicy, max_result_bytes: int):
    async def handle(args: HttpGetArgs, ctx: ToolContext) -> ToolResult:
        method = getattr(args, "method", "GET")
        body = getattr(args, "body", "") or None
        try:
            fetched = await policy.fetch(method, args.url, headers=args.headers,
                                         body=body.encode("utf-8") if body else None)
        except EgressError as exc:
            return ToolResult(str(exc), is_error=True)
        return _http_result(fetched, max_result_bytes)
    return handle


def http_get_tool(deps: ToolDeps) -> FunctionTool:
    return FunctionTool(
        "http_get", "Fetch a public web page or API with GET; returns status, headers and body text.",
        HttpGetArgs, _http_handler(deps.egress, deps.max_result_bytes), risk_level=1,
        max_result_bytes=deps.max_result_bytes)


def http_request_tool(deps: ToolDeps) -> FunctionTool:
    return FunctionTool(
        "http_request", "Send an HTTP request (any method, with headers and a body) to a public URL.",
        HttpRequestArgs, _http_handler(deps.egress, deps.max_result_bytes), risk_level=3,
        max_result_bytes=deps.max_result_bytes)


# --- memory_search / memory_save -------------------------------------------------

class MemorySearchArgs(_Args):
    query: str = Field(description="Words to look for; empty lists the newest notes.", max_length=1000)
    limit: int = Field(5, ge=1, le=MAX_LIMIT, description="How many notes at most.")


class MemorySaveArgs(_Args):
    text: str = Field(description="The note to remember.", min_length=1, max_length=MAX_TEXT_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="Optional labels.")


def memory_search_tool(deps: ToolDeps) -> FunctionTool:
    store = AgentMemoryStore(deps.db)

    async def handle(args: MemorySearchArgs, ctx: ToolContext) -> ToolResult:
        items = await store.search(ctx.workspace_id, ctx.agent_id, args.query, args.limit)
        return _json({"results": [item.as_dict() for item in items]})

    return FunctionTool("memory_search", "Search the notes this agent saved earlier (full-text, best first).",
                        MemorySearchArgs, handle, risk_level=1, max_result_bytes=deps.max_result_bytes)


def memory_save_tool(deps: ToolDeps) -> FunctionTool:
    store = AgentMemoryStore(deps.db)

    async def handle(args: MemorySaveArgs, ctx: ToolContext) -> ToolResult:
        try:
            item = await store.save(ctx.workspace_id, ctx.agent_id, args.text, args.tags)
        except ValueError as exc:
            return ToolResult(str(exc), is_error=True)
        return _json({"saved": True, "id": item.id})

    return FunctionTool("memory_save", "Save a note for this agent to find later with memory_search.",
                        MemorySaveArgs, handle, risk_level=2, max_result_bytes=deps.max_result_bytes)


BUILTIN_TOOLS: dict[str, Callable[[ToolDeps], FunctionTool]] = {
    "current_time": current_time_tool,
    "http_get": http_get_tool,
    "http_request": http_request_tool,
    "memory_search": memory_search_tool,
    "memory_save": memory_save_tool,
}
