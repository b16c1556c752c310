"""``warden hook claude-code`` / ``warden hook codex``: PreToolUse / PostToolUse hooks (issue 17).
Claude Code (and Codex, in the same shape) pipes the event JSON on stdin; before a tool runs we ask Warden
(``POST /api/governance/decide``, source ``hook:claude-code`` / ``hook:codex``) and print the
``hookSpecificOutput`` Claude Code obeys: allow, deny (with the reason the model
reads), and a pending approval becomes a deny naming the approval ("retry after
approval": the same call asked again once approved is allowed exactly once). After
the tool ran, the PostToolUse event reports its outcome to the action we recorded.
``mcp__*`` tools are passed through: calls through Warden's ``/mcp`` are governed
there, and deciding them here too would hold one call twice. Warden unreachable:
deny (fail closed) unless ``--fail-open``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from warden.cli.client import Refused, find_key, find_server
from warden.cli.hook_levels import load_levels
from warden.config import load_settings

hook_app = typer.Typer(help="Hooks that let Warden decide a coding agent's own tool calls.",
                       no_args_is_help=True)

CLAUDE_HOOK_TIMEOUT_S = 60.0  # Claude Code's default hook timeout: hold a little less


def _emit(decision: str, reason: str, client: str = "claude-code") -> None:
    if client == "codex" and decision == "allow":
        return  # Codex refuses permissionDecision "allow": saying nothing lets the call go on
    sys.stdout.write(json.dumps({"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": decision,
        "permissionDecisionReason": reason}}) + "\n")


def _pending_dir() -> Path:
    path = Path(os.environ.get("WARDEN_HOOK_STATE_DIR") or Path(tempfile.gettempdir()) / "warden-hook")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _call_key(event: dict[str, Any]) -> str:
    """The same tool call at Pre and Post: its tool_use_id, else session + tool + input."""
    ident = event.get("tool_use_id") or json.dumps(
        [event.get("session_id"), event.get("tool_name"), event.get("tool_input")], sort_keys=True)
    return hashlib.sha256(str(ident).encode()).hexdigest()[:32]


def _connect() -> tuple[str, str]:
    url = os.environ.get("WARDEN_URL", "").strip().rstrip("/")
    key = os.environ.get("WARDEN_KEY", "").strip()
    if url and key:
        return url, key
    settings = load_settings()
    server = find_server(settings)
    if server is None:
        raise Refused("no Warden server: export WARDEN_URL=<its address>")
    return server.url, find_key(settings)


def _post(url: str, key: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    r = httpx.post(f"{url}{path}", json=body, timeout=timeout, headers={"authorization": f"Bearer {key}"})
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {r.status_code}"
        raise Refused(f"Warden refused the question: {message}")
    return r.json()


def _pre(event: dict[str, Any], *, agent: str | None, hold_s: float, mapping: Path | None,
         fail_open: bool, client: str = "claude-code", mcp_server: str = "warden") -> None:
    tool = str(event.get("tool_name") or "")

    def emit(decision: str, reason: str) -> None:
        _emit(decision, reason, client)

    # Only Warden's own MCP server decides its tools; a tool of any other MCP server the
    # client talks to directly is decided here like any other tool.
    if tool.startswith(f"mcp__{mcp_server}__"):
        emit("allow", "MCP tool: governed by Warden's /mcp gateway, not decided twice")
        return
    tool_input = event.get("tool_input")
    try:
        level = load_levels(mapping).of(tool, tool_input)
        url, key = _connect()
        body = {"tool": tool, "arguments": tool_input, "level": level, "hold_s": hold_s,
                "source": f"hook:{client}", **({"agent": agent} if agent else {})}
        v = _post(url, key, "/api/governance/decide", body, timeout=hold_s + 10)
    except Exception as exc:  # noqa: BLE001 - any failure answers; a crashed hook lets the call run
        what = exc if isinstance(exc, Refused) else f"{exc.__class__.__name__}: {exc}"
        # --fail-open covers an unreachable Warden, not one that answered no (a revoked key).
        if fail_open and not isinstance(exc, Refused):
            emit("allow", f"Warden unreachable ({what}); allowed because the hook runs with --fail-open")
        else:
            emit("deny", f"Warden could not decide this call ({what}); denied (the hook fails closed)")
        return
    decision, reason = v.get("decision"), str(v.get("reason") or "")
    rule = f" [rule {v['rule']}]" if v.get("rule") else ""
    if decision == "allow":
        (_pending_dir() / _call_key(event)).write_text(str(v.get("action_id") or ""))
        emit("allow", f"Warden allowed this level-{v.get('level')} call{rule}: {reason}")
    elif decision == "pending":
        emit("deny", f"Warden holds this call for a human: approval {v.get('approval_id')} is pending "
                     f"({reason}); retry after approval (the same call will then be allowed once)")
    else:
        note = f" Note: {v['note']}" if v.get("note") else ""
        emit("deny", f"Warden denied this call{rule}: {reason}.{note}")


def _post_tool(event: dict[str, Any], *, failed: bool = False) -> None:
    """Report how an allowed call went; nothing to print (PostToolUse needs no decision).
    A tool that failed comes as PostToolUseFailure, with ``error`` instead of a response."""
    path = _pending_dir() / _call_key(event)
    try:
        action_id = path.read_text().strip()
        path.unlink()
    except OSError:
        return  # not a call we decided (an MCP tool, or the hook was not on at PreToolUse)
    response = event.get("tool_response") if not failed else {"error": event.get("error")}
    failed = failed or (isinstance(response, dict) and bool(response.get("is_error") or response.get("error")))
    result = {"digest": hashlib.sha256(json.dumps(response, sort_keys=True, default=str).encode())
              .hexdigest()}  # the hash of the result, never its text (it may hold secrets)
    try:
        url, key = _connect()
        if action_id:
            _post(url, key, f"/api/governance/actions/{action_id}/outcome",
                  {"ok": not failed, "result": result}, timeout=10)
    except (Refused, httpx.HTTPError, OSError, ValueError) as exc:
        sys.stderr.write(f"warden hook: could not report the outcome: {exc}\n")


Agent = Annotated[str | None, typer.Option(help="The agent (when the key is not bound to one).")]
Hold = Annotated[float, typer.Option(
    help="Seconds to hold the call for a human before answering 'pending' (keep under the hook timeout).",
    envvar="WARDEN_HOOK_HOLD")]
LevelsFile = Annotated[Path | None, typer.Option(
    help="A TOML/JSON file of tool levels and shell rules.", envvar="WARDEN_HOOK_LEVELS")]
FailOpen = Annotated[bool, typer.Option("--fail-open", help="Allow when Warden cannot be reached (default: deny).")]
McpServer = Annotated[str, typer.Option(
    help="The name Warden's /mcp has in the client's MCP config: its tools are decided there.",
    envvar="WARDEN_HOOK_MCP_SERVER")]


def _run(client: str, agent: str | None, hold: float, levels: Path | None, fail_open: bool,
         mcp_server: str) -> None:
    try:
        event = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    name = event.get("hook_event_name")
    if name in ("PostToolUse", "PostToolUseFailure"):
        _post_tool(event, failed=name == "PostToolUseFailure")
        return
    if name not in (None, "PreToolUse"):
        return  # another event wired to this hook by mistake: deciding it would record a call twice
    _pre(event, agent=agent, hold_s=hold, mapping=levels, fail_open=fail_open, client=client,
         mcp_server=mcp_server)


@hook_app.command("claude-code")
def claude_code(agent: Agent = None, hold: Hold = CLAUDE_HOOK_TIMEOUT_S - 10, levels: LevelsFile = None,
                fail_open: FailOpen = False, mcp_server: McpServer = "warden") -> None:
    """Decide a Claude Code tool call (PreToolUse) or report its outcome (PostToolUse,
    PostToolUseFailure); the event's JSON on stdin."""
    _run("claude-code", agent, hold, levels, fail_open, mcp_server)


@hook_app.command("codex")
def codex(agent: Agent = None, hold: Hold = CLAUDE_HOOK_TIMEOUT_S - 10, levels: LevelsFile = None,
          fail_open: FailOpen = False, mcp_server: McpServer = "warden") -> None:
    """The same for Codex's PreToolUse / PostToolUse hooks (hooks.json, or hooks tables in config.toml).
    Codex takes no "allow" answer: an allowed call gets no output, a refused one a deny."""
    _run("codex", agent, hold, levels, fail_open, mcp_server)
