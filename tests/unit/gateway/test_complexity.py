from __future__ import annotations

import pytest

from warden.gateway.complexity import (
    CHARS_PER_TOKEN,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    TOOL_OVERHEAD_TOKENS,
    Complexity,
    estimate_tokens,
    level_for,
    score_complexity,
)
from warden.gateway.types import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolSpec,
)


def req(*texts: str, **kw) -> ChatRequest:
    return ChatRequest(model="auto", messages=[Message.text("user", t) for t in texts], **kw)


def reasons_with(c: Complexity, word: str) -> list[str]:
    return [r for r in c.reasons if word in r]


def test_greeting_is_simple() -> None:
    c = score_complexity(req("hi there"))
    assert (c.level, c.score, c.reasons) == ("simple", 0.0, ["short, plain request"])


def test_proof_request_is_advanced_with_reasons() -> None:
    c = score_complexity(
        req(
            "Prove step by step that every bounded monotone sequence converges. "
            "Use induction where needed and give a rigorous proof of the lemma, with a counterexample "
            "for the unbounded case."
        )
    )
    assert c.level == "advanced"
    assert c.reasons == [
        "+1.5 math vocabulary: induction, lemma, proof",
        "+3 asks for reasoning: counterexample, prove, rigorous, step by step",
        "+1 reasoning over specialised material",
    ]
    assert c.score == 5.5


def test_vocabulary_matches_on_word_boundaries_only() -> None:
    none = score_complexity(req("The proven mysqlx approach is asynchronous and apiary-friendly."))
    assert none.reasons == ["short, plain request"]
    some = score_complexity(req("Port this C++ to Rust, and prove it is async-safe."))
    code = reasons_with(some, "code vocabulary")[0]
    assert "c++" in code and "rust" in code and "async" in code
    assert reasons_with(some, "asks for reasoning: prove")


def test_vocabulary_is_read_from_system_and_last_user_message_only() -> None:
    old = ChatRequest(
        model="auto",
        messages=[
            Message.text("user", "Explain the theorem and its proof with eigenvalue analysis"),
            Message.text("assistant", "Sure."),
            Message.text("user", "thanks!"),
        ],
    )
    assert score_complexity(old).reasons == ["short, plain request"]
    system = ChatRequest(
        model="auto",
        messages=[Message.text("system", "You answer SQL questions."), Message.text("user", "hello")],
    )
    assert reasons_with(score_complexity(system), "code vocabulary: sql")


def test_code_blocks_are_counted() -> None:
    text = "Why does this fail?\n```python\nx = 1\n```\nand this\n```\ny = 2\n```"
    c = score_complexity(req(text))
    assert reasons_with(c, "2 code blocks")
    one = score_complexity(req("```\ncode\n```"))
    assert reasons_with(one, "1 code block")


def test_conversation_depth() -> None:
    four = req(*["next"] * 4)
    ten = req(*["next"] * 10)
    assert reasons_with(score_complexity(four), "multi-turn conversation (4 turns)")
    assert reasons_with(score_complexity(ten), "deep conversation (10 turns)")


def test_long_prompt_adds_points_but_is_capped() -> None:
    medium = score_complexity(req("word " * 800))  # ~1000 tokens
    huge = score_complexity(req("word " * 200_000))
    assert reasons_with(medium, "long prompt")
    assert 1.5 <= medium.score <= 2.5
    assert huge.score == 2.5  # capped: length alone never makes a request advanced


def test_request_features_add_points() -> None:
    tools = [ToolSpec(name=f"t{i}") for i in range(5)]
    image = Message(role="user", content=[TextPart("what is this"), ImagePart(url="http://x/y.png")])
    c = score_complexity(
        ChatRequest(
            model="auto",
            messages=[image],
            tools=tools,
            response_format=ResponseFormat(type="json_schema", schema={"type": "object"}),
            reasoning_effort="high",
            max_tokens=16_000,
        )
    )
    assert reasons_with(c, "5 tools offered") == ["+1.5 5 tools offered"]
    assert reasons_with(c, "1 image")
    assert reasons_with(c, "structured output")
    assert reasons_with(c, "reasoning_effort=high") == ["+2 reasoning_effort=high"]
    assert reasons_with(c, "max_tokens=16000")
    assert c.level == "advanced"
    medium = score_complexity(req("x", reasoning_effort="medium", tools=[ToolSpec("a")]))
    assert "+1 reasoning_effort=medium" in medium.reasons and "+1 1 tool offered" in medium.reasons
    assert score_complexity(req("x", reasoning_effort="low")).score == 0


def test_moderate_and_complex_examples() -> None:
    moderate = score_complexity(req("Write a python function to parse a CSV file and explain the trade-offs step by step"))
    assert moderate.level == "moderate"
    complex_ = score_complexity(
        req("Refactor this python function; analyze the trade-offs.\n```\ncode\n```")
    )
    assert complex_.level == "complex", complex_


def test_deterministic() -> None:
    r = req("Design a distributed cache; analyze the trade-offs of write-through vs write-back.")
    assert score_complexity(r) == score_complexity(r)


@pytest.mark.parametrize(
    ("score", "level"),
    [(0, "simple"), (1.99, "simple"), (2, "moderate"), (3.99, "moderate"), (4, "complex"),
     (5.49, "complex"), (5.5, "advanced"), (20, "advanced")],
)
def test_levels(score: float, level: str) -> None:
    assert level_for(score) == level


def test_estimate_tokens_counts_text_images_tools_and_schema() -> None:
    assert estimate_tokens(req("abcd" * 100)) == MESSAGE_OVERHEAD_TOKENS + 100
    with_image = ChatRequest(
        model="m", messages=[Message(role="user", content=[TextPart("abcd"), ImagePart(data="AAAA")])]
    )
    assert estimate_tokens(with_image) == MESSAGE_OVERHEAD_TOKENS + IMAGE_TOKENS + 1
    tool = ToolSpec(name="get", description="abcd", parameters={"type": "object"})
    params_chars = len('{"type":"object"}')
    call = Message(role="assistant", tool_calls=[ToolCall(id="1", name="get", arguments="{}")])
    r = ChatRequest(
        model="m", messages=[call], tools=[tool],
        response_format=ResponseFormat(type="json_schema", schema={"a": 1}),
    )
    chars = len("get") + len("{}") + len("get") + len("abcd") + params_chars + len('{"a":1}')
    expected = MESSAGE_OVERHEAD_TOKENS + TOOL_OVERHEAD_TOKENS + -(-chars // CHARS_PER_TOKEN)
    assert estimate_tokens(r) == expected


def test_to_dict() -> None:
    c = score_complexity(req("prove it"))
    assert c.to_dict() == {"level": c.level, "score": c.score, "reasons": c.reasons}


# --- the first-word check skips patterns, never changes what they find --------

from hypothesis import given, settings, strategies as st  # noqa: E402

from warden.gateway import complexity  # noqa: E402

_PIECES = st.sampled_from([
    "sql", "SQL", "mysqlx", "c++", "C++ code", "race condition", "Race  condition", "big-o", "step-by-step",
    "step by step", "trade-offs", "prove", "proven", "İntegral", "integral", "ſql", "K", "ﬁ", "theorem",
    "eigenvalue", ".", ",", " ", "\n", "-", "_", "é", "kubernetes", "api", "apis", "think carefully",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_the_word_check_finds_what_every_pattern_finds(text: str) -> None:
    words = complexity.text_words(text)
    for pattern in (*complexity._DOMAIN_PATTERNS.values(), complexity._REASONING_PATTERN):
        regex = pattern[0]
        assert complexity.found_terms(text, pattern, words) == sorted(
            {m.group(0).lower() for m in regex.finditer(text)})


def test_a_text_that_is_not_ascii_is_read_by_the_patterns_alone() -> None:
    # "İ" lowercases to two characters, while the patterns match it as "i".
    assert complexity.text_words("İntegral") is None
    assert complexity.found_terms("İntegral", complexity._DOMAIN_PATTERNS["math"], None) == ["i̇ntegral"]
    assert complexity.text_words("an integral") == {"an", "integral"}
