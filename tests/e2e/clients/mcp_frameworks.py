"""Agent frameworks governed by Warden, as steps for ``tests/support/offline.py``: the
model is Warden's Responses API (``OPENAI_BASE_URL``/``OPENAI_API_KEY``, an agent's bound
key). ``openai_agents_mcp``: an ``openai-agents`` agent whose tools are Warden's ``/mcp``
(``MCPServerStreamableHttp`` with the Bearer header). ``pydantic_ai_decided``: a
``pydantic-ai`` agent with its own tools, each asking ``POST /api/governance/decide``
before it runs and reporting its outcome after. (pydantic-ai's MCP client needs
``fastmcp``, not in the test extras.) Tracing off as in ``agent_frameworks.py``."""

from __future__ import annotations

import os
from typing import Any

import httpx
import openai
from _serve import serve

MODEL = "openai/gpt-4o-mini"


async def openai_agents_mcp(question: str) -> Any:
    import agents
    from agents.mcp import MCPServerStreamableHttp

    agents.set_tracing_disabled(True)  # its traces would go to OpenAI
    agents.set_default_openai_client(openai.AsyncOpenAI(max_retries=0), use_for_tracing=False)
    agents.set_default_openai_api("responses")
    base = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    # A held call stays open until a human decides: the session's read timeout outlasts it.
    async with MCPServerStreamableHttp(
            params={"url": f"{base}/mcp", "headers": {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
                    "timeout": 10, "sse_read_timeout": 60},
            client_session_timeout_seconds=60, name="warden") as warden:
        agent = agents.Agent(name="governed", instructions="Use the tools.", mcp_servers=[warden], model=MODEL)
        result = await agents.Runner.run(agent, question, max_turns=6)
        return {"output": result.final_output,
                "tool_outputs": [str(i.output) for i in result.new_items if i.type == "tool_call_output_item"]}


def decided(tool: str, level: int, arguments: dict[str, Any], run: Any) -> str:
    """Ask Warden before running one of the program's own tools; report how it went."""
    base = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
                      timeout=30) as warden:
        r = warden.post("/api/governance/decide", json={"tool": tool, "arguments": arguments, "level": level})
        r.raise_for_status()
        verdict = r.json()
        if verdict["decision"] != "allow":
            return f"Warden {verdict['decision']} this call: {verdict['reason']} [{verdict['rule']}]"
        result = run()
        warden.post(f"/api/governance/actions/{verdict['action_id']}/outcome",
                    json={"ok": True, "result": result}).raise_for_status()
        return result


def pydantic_ai_decided(question: str) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel(MODEL, provider=OpenAIProvider(openai_client=openai.AsyncOpenAI(max_retries=0)))
    agent = Agent(model, instructions="Use the tools.")

    @agent.tool_plain
    def read_notes(name: str) -> str:
        """Read a note (read-only: level 1)."""
        return decided("read_notes", 1, {"name": name}, lambda: f"note {name}: buy milk")

    @agent.tool_plain
    def drop_table(table: str) -> str:
        """Drop a database table (destructive: level 4)."""
        return decided("drop_table", 4, {"table": table}, lambda: f"dropped {table}")

    result = agent.run_sync(question)
    returns = [p.content for m in result.all_messages() for p in m.parts if p.part_kind == "tool-return"]
    return {"output": result.output, "tool_outputs": [str(c) for c in returns]}


if __name__ == "__main__":
    serve({"openai_agents_mcp": openai_agents_mcp, "pydantic_ai_decided": pydantic_ai_decided})
