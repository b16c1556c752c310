"""Agent frameworks on Warden's Responses API (``OPENAI_BASE_URL``/``OPENAI_API_KEY`` from
the environment): the ``openai-agents`` SDK and ``pydantic-ai``, each running a one-tool
agent, as steps for ``tests/support/offline.py``. Their tracing is off: openai-agents'
(``OPENAI_AGENTS_DISABLE_TRACING`` and ``set_tracing_disabled``), and pydantic-ai has only
``logfire-api`` (no exporter), with ``LOGFIRE_SEND_TO_LOGFIRE=false`` besides."""

from __future__ import annotations

from typing import Any

import openai
from _serve import serve


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def openai_agents_weather(question: str) -> Any:
    import agents

    agents.set_tracing_disabled(True)  # its traces would go to OpenAI
    agents.set_default_openai_client(openai.AsyncOpenAI(max_retries=0), use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agent = agents.Agent(name="forecaster", instructions="Answer with the tool.",
                         tools=[agents.function_tool(get_weather)], model="openai/gpt-4o-mini")
    return agents.Runner.run_sync(agent, question).final_output


def pydantic_ai_weather(question: str) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel("openai/gpt-4o-mini", provider=OpenAIProvider(
        openai_client=openai.AsyncOpenAI(max_retries=0)))
    agent = Agent(model, instructions="Answer with the tool.")
    agent.tool_plain(get_weather)
    return agent.run_sync(question).output


if __name__ == "__main__":
    serve({"openai_agents_weather": openai_agents_weather, "pydantic_ai_weather": pydantic_ai_weather})
