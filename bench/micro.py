"""Micro benchmarks of pure decisions, in process: p50/p99 in microseconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.stats import Summary, summarize


def time_calls(fn: Callable[[], Any], *, n: int, time_limit: float = 5.0) -> Summary:
    for _ in range(min(200, n)):  # warm caches and regexes
        fn()
    samples: list[float] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + time_limit
    for i in range(n):
        t0 = clock()
        fn()
        samples.append((clock() - t0) / 1000)
        if i % 256 == 0 and time.monotonic() > deadline:
            break
    return summarize(samples)


def run_micro(n: int) -> list[tuple[str, Summary, str]]:
    from warden.gateway.catalog import get_catalog
    from warden.gateway.complexity import score_complexity
    from warden.gateway.providers.registry import PROVIDERS
    from warden.gateway.routing import plan_route
    from warden.gateway.deployment import Deployment
    from warden.gateway.types import ChatRequest, Message, TextPart

    def req(text: str, model: str = "auto") -> ChatRequest:
        return ChatRequest(model=model, messages=[
            Message(role="system", content=[TextPart("You are a helpful assistant.")]),
            Message(role="user", content=[TextPart(text)])])

    short = req("Say hello to Warden")
    code = ("Refactor this Python function to remove the race condition and explain the time "
            "complexity; prove the invariant holds by induction.\n```python\n"
            + "def f(x):\n    return [y * 2 for y in x if y % 3]\n" * 60 + "```")
    long_req = req(code)
    out: list[tuple[str, Summary, str]] = []
    out.append(("complexity: short prompt", time_calls(lambda: score_complexity(short), n=n),
                f"{len('Say hello to Warden')} chars"))
    out.append(("complexity: code prompt", time_calls(lambda: score_complexity(long_req), n=n),
                f"{len(code)} chars"))

    catalog = get_catalog()
    deps = [Deployment.build(p, m, f"cred-{p}", catalog=catalog)
            for p in PROVIDERS for m in catalog.known_models(p)]
    out.append(("routing plan, auto, full catalog", time_calls(lambda: plan_route(short, deps), n=n),
                f"{len(deps)} deployments, {len(PROVIDERS)} providers"))
    out.append(("routing plan, auto, code prompt", time_calls(lambda: plan_route(long_req, deps), n=n),
                f"{len(deps)} deployments"))
    named = req("hello", "openai/gpt-4o-mini")
    out.append(("routing plan, explicit model", time_calls(lambda: plan_route(named, deps), n=n),
                f"{len(deps)} deployments"))
    try:
        from warden.agents.policy import WorkspacePolicy, decide
    except ImportError:
        return out
    policy = WorkspacePolicy(levels={4: "approve"}, tools={"shell": "deny"})
    out.append(("governance decide, matrix only", time_calls(lambda: decide("intern", 3), n=n), ""))
    out.append(("governance decide, with workspace policy",
                time_calls(lambda: decide("supervised", 4, policy, tool="shell"), n=n), ""))
    return out


def run_body_decode(n: int) -> list[tuple[str, Summary, str]]:
    """The chat path's body decode (``formats.common.parse_body``: orjson, then the
    pydantic model) against msgspec's decoder, on a typical and a long request body.
    msgspec is not a dependency: ``pip install msgspec`` to include it."""
    import orjson

    try:
        import msgspec
    except ImportError:
        msgspec = None

    from warden.formats.common import parse_body
    from warden.formats.openai import ChatCompletionBody

    short = orjson.dumps({"model": "auto", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello to the benchmark"}]})
    long = orjson.dumps({"model": "openai/gpt-4o-mini", "temperature": 0.2, "max_tokens": 512,
                         "messages": [{"role": "user" if i % 2 else "assistant",
                                       "content": "lorem ipsum dolor sit amet " * 40}
                                      for i in range(20)]})
    decoder = msgspec.json.Decoder() if msgspec is not None else None
    out: list[tuple[str, Summary, str]] = []
    for label, raw in (("typical", short), ("20 messages", long)):
        note = f"{len(raw)} bytes"
        out.append((f"body decode, orjson.loads, {label}", time_calls(lambda: orjson.loads(raw), n=n), note))
        if decoder is not None:
            out.append((f"body decode, msgspec, {label}", time_calls(lambda: decoder.decode(raw), n=n), note))
        out.append((f"body parse (orjson + pydantic model), {label}",
                    time_calls(lambda: parse_body(ChatCompletionBody, raw), n=n), note))
        out.append((f"body parse (pydantic from JSON), {label}",
                    time_calls(lambda: ChatCompletionBody.model_validate_json(raw), n=n), note))
    return out
