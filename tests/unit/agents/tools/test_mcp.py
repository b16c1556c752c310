"""MCP server definitions, the stdio allow-list, naming, level mapping and result conversion,
plus the two settings this feature adds."""

from __future__ import annotations

import shutil
import sys

import pytest
from mcp.types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
)

from warden.agents.tools.mcp import (
    exposed_name,
    level_from_annotations,
    result_text,
    stdio_command_allowed,
)
from warden.agents.tools.mcp import validate_mcp_servers
from warden.config import load_settings
from warden.errors import ConfigError, Forbidden, ValidationFailed

STDIO = {"name": "local", "transport": "stdio", "command": sys.executable, "args": ["server.py"]}
HTTP = {"name": "docs", "transport": "http", "url": "https://mcp.example/mcp", "headers": {"x-k": "v"}}


def test_valid_definitions_pass() -> None:
    validate_mcp_servers([HTTP], is_admin=False, stdio_allow=[])
    validate_mcp_servers([HTTP, STDIO], is_admin=True, stdio_allow=[sys.executable])


def test_stdio_needs_an_admin() -> None:
    with pytest.raises(Forbidden, match="only an admin") as exc:
        validate_mcp_servers([STDIO], is_admin=False, stdio_allow=[sys.executable])
    assert exc.value.code == "mcp_stdio_admin_only"


def test_stdio_needs_an_allow_listed_command() -> None:
    with pytest.raises(Forbidden, match="not on the operator's allow-list") as exc:
        validate_mcp_servers([STDIO], is_admin=True, stdio_allow=["npx"])
    assert exc.value.code == "mcp_command_not_allowed"
    with pytest.raises(Forbidden):
        validate_mcp_servers([STDIO], is_admin=True, stdio_allow=[])


@pytest.mark.parametrize(("server", "message"), [
    ({"name": "x", "transport": "http"}, "needs a url"),
    ({"name": "x", "transport": "http", "url": "ftp://h/"}, "needs a url"),
    ({"name": "x", "transport": "http", "url": "http://h/", "command": "ls"}, "belong to stdio"),
    ({"name": "x", "transport": "stdio"}, "needs a command"),
    ({"name": "x", "transport": "stdio", "command": "ls", "url": "http://h/"}, "belong to http"),
    ({"name": "a__b", "transport": "http", "url": "http://h/"}, "must not contain '__'"),
    ({"name": "bad name", "transport": "http", "url": "http://h/"}, "name: String should match"),
    ({"name": "x", "transport": "http", "url": "http://h/", "tool_levels": {"t": 9}}, "must be 1, 2, 3 or 4"),
    ({"name": "x", "transport": "http", "url": "http://h/", "surprise": 1}, "surprise: Extra inputs"),
    ({"name": "x", "transport": "sse", "url": "http://h/"}, "transport"),
])
def test_bad_definitions_name_the_problem(server: dict, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message) as exc:
        validate_mcp_servers([server], is_admin=True, stdio_allow=[])
    assert exc.value.param == "mcp_servers"


def test_non_dict_and_duplicate_servers() -> None:
    with pytest.raises(ValidationFailed, match=r"mcp_servers\[0\]"):
        validate_mcp_servers(["not a dict"], is_admin=True, stdio_allow=[])  # type: ignore[list-item]
    with pytest.raises(ValidationFailed, match="duplicate server name 'docs'"):
        validate_mcp_servers([HTTP, HTTP], is_admin=True, stdio_allow=[])


def test_stdio_allow_list_matches_executables_not_lookalikes(tmp_path) -> None:
    python_name = "python3"
    assert stdio_command_allowed(sys.executable, [sys.executable])
    found = shutil.which(python_name)
    assert found is not None
    assert stdio_command_allowed(found, [python_name])  # same file once looked up on PATH
    fake = tmp_path / python_name
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert not stdio_command_allowed(str(fake), [python_name])  # a look-alike elsewhere
    assert not stdio_command_allowed("no-such-binary-anywhere", [python_name])
    assert not stdio_command_allowed(python_name, ["no-such-binary-anywhere"])


def _tool(annotations: ToolAnnotations | None) -> Tool:
    return Tool(name="t", input_schema={"type": "object"}, annotations=annotations)


def test_annotations_map_to_risk_levels() -> None:
    assert level_from_annotations(_tool(ToolAnnotations(read_only_hint=True)), trusted=True) == 1
    both = _tool(ToolAnnotations(read_only_hint=True, destructive_hint=True))
    assert level_from_annotations(both, trusted=True) == 1
    assert level_from_annotations(_tool(ToolAnnotations(destructive_hint=True)), trusted=True) == 4
    assert level_from_annotations(_tool(ToolAnnotations(destructive_hint=False)), trusted=True) == 3
    assert level_from_annotations(_tool(None), trusted=True) == 3
    # From an untrusted server a hint may only raise the level: readOnlyHint is ignored.
    assert level_from_annotations(_tool(ToolAnnotations(read_only_hint=True)), trusted=False) == 3
    assert level_from_annotations(both, trusted=False) == 4
    assert level_from_annotations(_tool(ToolAnnotations(destructive_hint=True)), trusted=False) == 4
    assert level_from_annotations(_tool(None), trusted=False) == 3


def test_exposed_names() -> None:
    assert exposed_name("git", "log") == "git__log"
    assert exposed_name("fs", "read.file/v2") == "fs__read_file_v2"
    long = exposed_name("server", "x" * 100)
    assert len(long) == 64 and long.startswith("server__xxx")
    assert long != exposed_name("server", "x" * 101)  # the hash keeps long names apart


def test_result_text_conversion() -> None:
    text = CallToolResult(content=[TextContent(text="a"), TextContent(text="b")])
    assert result_text(text) == "a\nb"
    structured = CallToolResult(content=[], structured_content={"sum": 5})
    assert result_text(structured) == '{"sum":5}'
    mixed = CallToolResult(content=[
        ImageContent(data="AAAA", mime_type="image/png"),
        ResourceLink(name="r", uri="file:///r.txt"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///e.txt", text="embedded")),
    ])
    assert result_text(mixed) == "[image: image/png, 3 bytes not shown]\n[resource link: file:///r.txt]\nembedded"
    assert result_text(CallToolResult(content=[])) == "(no content)"
    assert result_text(CallToolResult(content=[], is_error=True)) == "tool error"


def test_settings_for_egress_and_stdio() -> None:
    s = load_settings(egress_allow=" 10.0.0.0/8 , localhost,, ::1 ", mcp_stdio_allow="npx, /usr/bin/uvx")
    assert s.egress_allow_list == ["10.0.0.0/8", "localhost", "::1"]
    assert s.mcp_stdio_allow_list == ["npx", "/usr/bin/uvx"]
    assert load_settings().egress_allow_list == [] and load_settings().mcp_stdio_allow_list == []
    with pytest.raises(ConfigError, match="WARDEN_EGRESS_ALLOW: .*'10.0.0.0/33'"):
        load_settings(egress_allow="10.0.0.0/33")
    with pytest.raises(ConfigError, match="WARDEN_EGRESS_ALLOW: .*not a valid host name"):
        load_settings(egress_allow="bad host!")
    with pytest.raises(ConfigError, match="WARDEN_MCP_STDIO_ALLOW: .*without arguments"):
        load_settings(mcp_stdio_allow="npx -y evil")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_EGRESS_ALLOW", "192.168.0.0/16,intranet")
    monkeypatch.setenv("WARDEN_MCP_STDIO_ALLOW", "mcp-git")
    s = load_settings()
    assert s.egress_allow_list == ["192.168.0.0/16", "intranet"] and s.mcp_stdio_allow_list == ["mcp-git"]
