"""langchain-openai and langchain-anthropic against Warden (base URLs and key from the
environment): invoke, stream, a tool round trip, token counting and embeddings, as
steps for ``tests/support/offline.py``. LangSmith tracing is off (``LANGCHAIN_TRACING_V2``)."""

from __future__ import annotations

import os
from typing import Any

from _serve import serve


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat_anthropic() -> Any:
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(model="claude-sonnet-4-5", base_url=os.environ["ANTHROPIC_BASE_URL"],
                         api_key=os.environ["ANTHROPIC_API_KEY"], max_retries=0, max_tokens=256)


def chat_openai(responses_api: bool) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="openai/gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"],
                      api_key=os.environ["OPENAI_API_KEY"], max_retries=0,
                      use_responses_api=responses_api)


def chat(kind: str, responses_api: bool = False) -> Any:
    return chat_anthropic() if kind == "anthropic" else chat_openai(responses_api)


def invoke(kind: str, prompt: str, responses_api: bool = False) -> str:
    return chat(kind, responses_api).invoke(prompt).text


def stream(kind: str, prompt: str, responses_api: bool = False) -> dict[str, Any]:
    """The streamed text, and the usage of the chunks added up (as langchain merges them)."""
    chunks = list(chat(kind, responses_api).stream(prompt))
    return {"texts": [c.text for c in chunks], "usage": sum(chunks[1:], chunks[0]).usage_metadata}


def weather_tool_round_trip(kind: str, question: str, responses_api: bool = False) -> dict[str, Any]:
    """Ask with ``get_weather`` bound, run the call it asks for, send the result back."""
    from langchain_core.messages import ToolMessage

    tooled = chat(kind, responses_api).bind_tools([get_weather])
    asked = tooled.invoke(question)
    call = asked.tool_calls[0]
    result = get_weather(**call["args"])
    answer = tooled.invoke([question, asked, ToolMessage(result, tool_call_id=call["id"])])
    return {"call": {"name": call["name"], "args": call["args"]}, "answer": answer.text}


def count_anthropic_tokens(system: str, human: str) -> int:
    from langchain_core.messages import HumanMessage, SystemMessage

    return chat_anthropic().get_num_tokens_from_messages([SystemMessage(system), HumanMessage(human)])


def embed(documents: list[str], query: str, dimensions: int) -> dict[str, Any]:
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: send the texts, not tiktoken ids (tiktoken would
    # download its tables, and no traffic leaves loopback here).
    emb = OpenAIEmbeddings(model="text-embedding-3-small", base_url=os.environ["OPENAI_BASE_URL"],
                           api_key=os.environ["OPENAI_API_KEY"], dimensions=dimensions, max_retries=0,
                           check_embedding_ctx_length=False)
    return {"documents": emb.embed_documents(documents), "query": emb.embed_query(query)}


if __name__ == "__main__":
    serve({f.__name__: f for f in (invoke, stream, weather_tool_round_trip, count_anthropic_tokens, embed)})
