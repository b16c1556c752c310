"""What every tool is: the context it runs in, the result it returns, and a
function-backed implementation with argument validation.

Kept apart from ``toolbox.py`` so the built-in and MCP tool modules can depend
on the types without importing the toolbox that assembles them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from warden.errors import field_path

log = logging.getLogger("warden.agents.tools")

MAX_RESULT_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class ToolContext:
    workspace_id: str
    agent_id: str
    run_id: str
    session_id: str


@dataclass(slots=True)
class ToolResult:
    content: str  # what the model reads (JSON text or plain text)
    is_error: bool = False


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments
    risk_level: int  # 1 read, 2 draft, 3 mutate, 4 critical

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


def cap_text(text: str, limit: int = MAX_RESULT_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with a note saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", errors="ignore")  # never split a character
    return f"{kept}\n[truncated: {len(raw) - len(kept.encode('utf-8'))} more bytes not shown]"


def capped(result: ToolResult, limit: int = MAX_RESULT_BYTES) -> ToolResult:
    return ToolResult(cap_text(result.content, limit), result.is_error)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema without pydantic's ``title`` noise (providers ignore or reject it)."""
    def strip(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, dict):
            return {k: strip(v, k == "properties") for k, v in node.items()
                    if in_properties or k != "title"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(model.model_json_schema())


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = field_path(err["loc"], "arguments")
        parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A tool backed by an async function taking validated arguments."""

    name: str
    description: str
    args_model: type[BaseModel]
    handler: Callable[[Any, ToolContext], Awaitable[ToolResult]]
    risk_level: int
    max_result_bytes: int = MAX_RESULT_BYTES

    @property
    def parameters(self) -> dict[str, Any]:
        return schema_of(self.args_model)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            parsed = self.args_model.model_validate(args)
        except ValidationError as exc:
            return ToolResult(describe_validation_error(exc), is_error=True)
        try:
            result = await self.handler(parsed, ctx)
        except Exception:  # a tool bug must reach the model as a tool error, not crash the run
            log.exception("tool %s failed", self.name)
            return ToolResult(f"tool {self.name} failed unexpectedly", is_error=True)
        return capped(result, self.max_result_bytes)
