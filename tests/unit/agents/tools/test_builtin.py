"""Built-in tools (current_time, http_get, http_request), the toolbox and its validation."""

from __future__ import annotations

import orjson
import pytest

from warden.agents.tools.egress import EgressPolicy
from warden.agents.tools.base import FunctionTool, cap_text
from warden.agents.tools.toolbox import build_toolbox, validate_tool_names
from warden.agents.tools.builtin import BUILTIN_TOOLS
from warden.agents.tools.base import ToolContext, ToolResult
from warden.agents.tools.deps import ToolDeps
from warden.config import load_settings
from warden.errors import ValidationFailed
from warden.store.db import Database

CTX = ToolContext(workspace_id="ws_1", agent_id="agt_1", run_id="run_1", session_id="ses_1")


@pytest.fixture
async def deps():
    db = Database("sqlite+aiosqlite:///:memory:")
    yield ToolDeps(db=db, egress=EgressPolicy.from_entries(["127.0.0.1"], max_bytes=200_000))
    await db.close()


async def test_current_time_in_a_timezone(deps: ToolDeps) -> None:
    tool = BUILTIN_TOOLS["current_time"](deps)
    result = await tool.run({"timezone": "Asia/Kolkata"}, CTX)
    data = orjson.loads(result.content)
    assert not result.is_error
    assert data["timezone"] == "Asia/Kolkata" and data["utc_offset"] == "+05:30"
    assert data["iso"].endswith("+05:30")
    utc = orjson.loads((await tool.run({}, CTX)).content)
    assert utc["timezone"] == "UTC" and utc["utc_offset"] == "+00:00"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", ""])
async def test_current_time_bad_timezone_is_a_tool_error(deps: ToolDeps, zone: str) -> None:
    result = await BUILTIN_TOOLS["current_time"](deps).run({"timezone": zone}, CTX)
    assert result.is_error and "unknown time zone" in result.content


async def test_malformed_arguments_are_tool_errors(deps: ToolDeps) -> None:
    tool = BUILTIN_TOOLS["current_time"](deps)
    result = await tool.run({"timezone": 5, "extra": True}, CTX)
    assert result.is_error
    assert "invalid arguments" in result.content and "timezone" in result.content and "extra" in result.content
    missing = await BUILTIN_TOOLS["http_get"](deps).run({}, CTX)
    assert missing.is_error and "url: Field required" in missing.content


def test_schemas_are_clean_json_schema(deps: ToolDeps) -> None:
    schema = BUILTIN_TOOLS["http_request"](deps).parameters
    assert schema["type"] == "object" and schema["required"] == ["url"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["method"]["enum"][:2] == ["GET", "HEAD"]
    assert "title" not in schema and "title" not in schema["properties"]["url"]


def test_declared_risk_levels(deps: ToolDeps) -> None:
    levels = {name: factory(deps).risk_level for name, factory in BUILTIN_TOOLS.items()}
    assert levels == {"current_time": 1, "http_get": 1, "http_request": 3, "memory_search": 1, "memory_save": 2}


async def test_http_get_reads_a_loopback_page_when_allowed(deps: ToolDeps, loopback) -> None:
    result = await BUILTIN_TOOLS["http_get"](deps).run(
        {"url": f"http://127.0.0.1:{loopback.port}/echo", "headers": {"x-test": "yes"}}, CTX)
    data = orjson.loads(result.content)
    assert not result.is_error and data["status"] == 200 and data["truncated"] is False
    assert orjson.loads(data["body"])["headers"]["x-test"] == "yes"
    assert data["headers"]["content-type"] == "application/json"


async def test_http_get_refusal_is_a_tool_error(loopback) -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    result = await BUILTIN_TOOLS["http_get"](ToolDeps(db=db)).run(
        {"url": f"http://127.0.0.1:{loopback.port}/echo"}, CTX)
    await db.close()
    assert result.is_error and "loopback" in result.content and "WARDEN_EGRESS_ALLOW" in result.content


async def test_http_request_sends_method_and_body(deps: ToolDeps, loopback) -> None:
    result = await BUILTIN_TOOLS["http_request"](deps).run(
        {"method": "PATCH", "url": f"http://127.0.0.1:{loopback.port}/echo",
         "headers": {"content-type": "application/json"}, "body": '{"a": 1}'}, CTX)
    echoed = orjson.loads(orjson.loads(result.content)["body"])
    assert echoed["method"] == "PATCH" and echoed["body"] == '{"a": 1}'


async def test_http_status_errors_are_readable_results(deps: ToolDeps, loopback) -> None:
    result = await BUILTIN_TOOLS["http_get"](deps).run({"url": f"http://127.0.0.1:{loopback.port}/nope"}, CTX)
    assert not result.is_error and orjson.loads(result.content)["status"] == 404


async def test_http_bodies_binary_charset_and_truncation(deps: ToolDeps, loopback) -> None:
    get = BUILTIN_TOOLS["http_get"](deps)
    binary = orjson.loads((await get.run({"url": f"http://127.0.0.1:{loopback.port}/binary"}, CTX)).content)
    assert binary["body"] == "[104 bytes of image/png not shown]"
    latin = orjson.loads((await get.run({"url": f"http://127.0.0.1:{loopback.port}/latin1"}, CTX)).content)
    assert latin["body"] == "café"
    big = await get.run({"url": f"http://127.0.0.1:{loopback.port}/big?n=150000"}, CTX)
    data = orjson.loads(big.content)  # still valid JSON: the body was cut, not the envelope
    assert data["truncated"] is True and len(big.content.encode()) <= 32 * 1024
    assert set(data["body"]) == {"a"}


def test_cap_text_never_splits_a_character() -> None:
    assert cap_text("short", 10) == "short"
    capped = cap_text("é" * 10, 5)  # 20 bytes; 5 bytes = 2 whole characters
    assert capped.startswith("éé\n[truncated: 16 more bytes not shown]")


async def test_a_crashing_handler_becomes_a_tool_error() -> None:
    from pydantic import BaseModel

    class NoArgs(BaseModel):
        pass

    async def boom(args: NoArgs, ctx: ToolContext) -> ToolResult:
        raise RuntimeError("secret internals")

    result = await FunctionTool("boom", "", NoArgs, boom, risk_level=1).run({}, CTX)
    assert result.is_error and result.content == "tool boom failed unexpectedly"


def test_validate_tool_names() -> None:
    validate_tool_names(["current_time", "memory_save"])
    with pytest.raises(ValidationFailed, match="unknown tool 'shell_exec'") as exc:
        validate_tool_names(["current_time", "shell_exec"])
    assert exc.value.param == "tools" and exc.value.code == "unknown_tool"
    with pytest.raises(ValidationFailed, match="listed twice"):
        validate_tool_names(["http_get", "http_get"])


async def test_toolbox_specs_and_level_overrides(deps: ToolDeps) -> None:
    async with await build_toolbox(["current_time", "http_request"], [],
                                   tool_levels={"http_request": 4, "gone_tool": 2}, deps=deps) as box:
        assert [s.name for s in box.specs()] == ["current_time", "http_request"]
        assert box.tools["http_request"].risk_level == 4
        assert box.tools["current_time"].risk_level == 1
        assert box.specs()[0].parameters["properties"]["timezone"]["default"] == "UTC"


async def test_build_toolbox_rejects_bad_definitions(deps: ToolDeps) -> None:
    with pytest.raises(ValidationFailed, match="unknown tool 'nope'"):
        await build_toolbox(["nope"], [], deps=deps)
    with pytest.raises(ValidationFailed, match=r"tool_levels\['current_time'\] must be 1, 2, 3 or 4"):
        await build_toolbox(["current_time"], [], tool_levels={"current_time": 7}, deps=deps)
    with pytest.raises(ValidationFailed, match=r"mcp_servers\[0\] \(x\): transport"):
        await build_toolbox([], [{"name": "x", "transport": "ftp"}], deps=deps)


def test_deps_from_settings() -> None:
    settings = load_settings(egress_allow="10.0.0.0/8, intranet.example", mcp_stdio_allow="npx, uvx")
    deps = ToolDeps.from_settings(settings, db=None, mcp_call_timeout=5.0)  # type: ignore[arg-type]
    assert deps.mcp_stdio_allow == ("npx", "uvx") and deps.mcp_call_timeout == 5.0
    assert deps.egress.allow_hosts == frozenset({"intranet.example"})
    assert [str(n) for n in deps.egress.allow_networks] == ["10.0.0.0/8"]
