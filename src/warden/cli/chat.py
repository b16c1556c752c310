"""``warden chat``: talk to an agent (``--agent``, sessions, governed tools) or to a
model through the gateway (``-m``), one-shot or interactive, always through the server.

- Input: the MESSAGE argument, with standard input appended when it is piped
  (``cat notes | warden chat -m auto "summarise"``). Without MESSAGE the chat is
  interactive: each line read is a turn (an empty line or EOF ends it).
- Output: the reply's tokens on stdout as they stream; tool calls with their
  governance decision, the pause for an approval, and the cost at the end on stderr.
- A pause: the pending actions are shown and an admin is asked on the spot (in an
  interactive chat the next line read is the answer; in a one-shot one the
  terminal, when there is one); the run then goes on in the server and is followed
  here. Without anyone to ask, the command says how to decide and exits 3.
- ``-c`` continues the most recent session (of ``--agent``, if given).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import dispatch, err, fail

if TYPE_CHECKING:
    from warden.cli.client import Client

PAUSED_EXIT = 3
_ARGS_SHOWN = 160


def _tty_line(prompt: str) -> str | None:
    """One line from the controlling terminal (stdin is the input), or None without one."""
    if not sys.stderr.isatty():
        return None
    try:
        with open("/dev/tty") as tty:
            err.print(prompt, end="", highlight=False)
            return tty.readline()
    except OSError:
        return None


class Chat:
    def __init__(self, c: Client, *, agent: str | None, model: str | None, session: str | None,
                 ask: Callable[[str], str | None]) -> None:
        self.c = c
        self.agent = agent
        self.model = model
        self.session = session
        self.ask = ask
        self.history: list[dict[str, str]] = []  # model chats: the conversation so far

    # --- a turn ------------------------------------------------------------------

    def turn(self, message: str) -> int:
        if self.model is not None and self.agent is None:
            return self._model_turn(message)
        body: dict[str, Any] = {"message": message, "agent_id": self.agent, "session_id": self.session}
        return self._follow(self.c.stream("POST", "/api/chat/stream",
                                          {k: v for k, v in body.items() if v is not None}))

    def _model_turn(self, message: str) -> int:
        self.history.append({"role": "user", "content": message})
        text, usage, model = [], None, None
        for chunk in self.c.stream("POST", "/v1/chat/completions", {
                "model": self.model, "messages": self.history, "stream": True,
                "stream_options": {"include_usage": True}}):
            model = chunk.get("model") or model
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    text.append(delta)
                    _write(delta)
            usage = chunk.get("usage") or usage
        _write("\n")
        self.history.append({"role": "assistant", "content": "".join(text)})
        u = usage or {}
        _cost_line(model, u.get("prompt_tokens"), u.get("completion_tokens"),
                   (u.get("warden") or {}).get("cost_usd"))
        return 0

    def _follow(self, events: Iterator[dict[str, Any]]) -> int:
        seq, run_id, open_line = 0, None, False
        required: list[dict[str, Any]] = []  # this stretch's approval.required events
        for ev in events:
            seq, kind = ev.get("seq", seq), ev["type"]
            run_id = ev.get("run_id", run_id)
            self.session = ev.get("session_id", self.session)
            if kind == "message.delta":
                _write(ev["text"])
                open_line = not ev["text"].endswith("\n")
                continue
            if open_line:
                _write("\n")
                open_line = False
            if kind == "tool.call":
                level = ev.get("risk_level")
                why = f": {ev['reason']}" if ev.get("reason") else ""
                err.print(f"[dim]tool[/dim] {ev['name']}({_short(ev.get('arguments'))}) level {level} "
                          f"→ [bold]{ev.get('decision')}[/bold]{why}", highlight=False, soft_wrap=True)
            elif kind == "tool.result":
                mark = "[red]error[/red]" if ev.get("is_error") else "result"
                err.print(f"[dim]{mark}[/dim] {ev.get('name')}: {_short(ev.get('content') or ev.get('result'))}",
                          highlight=False, soft_wrap=True)
            elif kind == "approval.required":
                required.append(ev)
            elif kind == "run.paused":
                return self._paused(run_id, seq, required)
            elif kind == "run.completed":
                u = ev.get("usage") or {}
                _cost_line(f"{ev.get('provider')}/{ev.get('model')}" if ev.get("model") else None,
                           u.get("input_tokens"), u.get("output_tokens"), ev.get("cost_usd"))
                return 0
            elif kind in ("run.failed", "run.cancelled"):
                error = ev.get("error") or {}
                err.print(f"[red]{kind.split('.')[1]}:[/red] {error.get('message', '')} "
                          f"(run {run_id})".replace("  ", " "), highlight=False, soft_wrap=True)
                return 1
        err.print(f"the stream ended before the run did; follow it with: warden runs show {run_id}",
                  highlight=False, soft_wrap=True)
        return 1

    def _paused(self, run_id: str, seq: int, required: list[dict[str, Any]]) -> int:
        # The events name each approval: no lookup, unless a server too old to say sent them.
        if required and all(ev.get("approval_id") for ev in required):
            pending = [{"id": ev["approval_id"], "tool": ev.get("name"), "arguments": ev.get("arguments"),
                        "risk_level": ev.get("risk_level"), "reason": ev.get("reason")} for ev in required]
        else:
            pending = self.c.get("/api/approvals", run_id=run_id, status="pending")
        for a in pending:
            err.print(f"[yellow]paused[/yellow]: {a['tool']}({_short(a.get('arguments'))}) level "
                      f"{a.get('risk_level')} needs a human: {a.get('reason') or ''}".rstrip(": "),
                      highlight=False, soft_wrap=True)
            answer = self.ask(f"approve {a['tool']}? [y]es / [n]o (reject): ")
            if answer is None:
                err.print(f"decide with: warden approvals approve {a['id']}  (or reject {a['id']}); "
                          f"then follow it: warden runs show {run_id}", highlight=False, soft_wrap=True)
                return PAUSED_EXIT
            decision = "approve" if answer.strip().lower() in ("y", "yes", "a", "approve") else "reject"
            done = self.c.post(f"/api/approvals/{a['id']}", {"decision": decision})
            err.print(f"{done['status']} by {done['decided_by']}", highlight=False)
        return self._follow(self.c.stream("GET", f"/api/runs/{run_id}/events?after={seq}"))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _ARGS_SHOWN else text[:_ARGS_SHOWN] + "…"


def _cost_line(model: str | None, tokens_in: Any, tokens_out: Any, cost: Any) -> None:
    parts = [model or "?", f"{tokens_in or 0} in / {tokens_out or 0} out tokens",
             f"${cost}" if cost is not None else "cost unknown"]
    err.print(f"[dim]{' · '.join(parts)}[/dim]", highlight=False, soft_wrap=True)


def _latest_session(c: Client, agent: str | None) -> str:
    agent_id = c.get(f"/api/agents/{agent}")["id"] if agent else None
    for s in c.get("/api/sessions", limit=200):
        if agent_id is None or s["agent_id"] == agent_id:
            return s["id"]
    fail("no session to continue" + (f" with agent {agent}" if agent else "") + ": start one with "
         "warden chat" + (f" --agent {agent}" if agent else ""))
    raise AssertionError  # unreachable: fail exits


def chat_cmd(
    message: Annotated[str | None, typer.Argument(help="One-shot message (piped stdin is appended).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent id or name (default: assistant).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Chat with a model through the "
                                              "gateway instead of an agent: auto, a group, provider/model.")] = None,
    cont: Annotated[bool, typer.Option("--continue", "-c", help="Continue the latest session.")] = False,
    session: Annotated[str | None, typer.Option(help="Continue this session.")] = None,
) -> None:
    """Chat with an agent or a model: streaming, governed tool calls, inline approvals, cost."""
    if model is not None and agent is not None:
        fail("-m chats with a model, --agent with an agent (which uses its own model: "
             "warden agents create NAME --model M); choose one", 2)
    if model is not None and (cont or session):
        fail("-m chats with a model and keeps no session; -c/--session continue an agent's (add --agent)", 2)
    piped = not sys.stdin.isatty()
    lines: Iterator[str] | None = None
    if message is not None and piped:
        extra = sys.stdin.read()
        message = f"{message}\n\n{extra}" if extra.strip() else message
    elif message is None:
        lines = (line.rstrip("\n") for line in sys.stdin)

    def ask(prompt: str) -> str | None:
        if lines is not None:
            err.print(prompt, end="", highlight=False)
            return next(lines, None)
        return input(prompt) if not piped else _tty_line(prompt)

    def run(c: Client) -> int:
        sid = session or (_latest_session(c, agent) if cont else None)
        chat = Chat(c, agent=agent, model=model, session=sid, ask=ask)
        if message is not None:
            return chat.turn(message)
        code = 0
        while True:
            if not piped:
                err.print("[bold]you>[/bold] ", end="", highlight=False)
            text = next(lines, None) if lines is not None else None
            if text is None or not text.strip():
                return code
            code = chat.turn(text)
            if code == PAUSED_EXIT:
                return code

    raise typer.Exit(dispatch(run))
