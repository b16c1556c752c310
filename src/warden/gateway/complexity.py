"""How demanding a request is: a deterministic, explainable score.

Every signal adds points and a reason; the total maps to a level:

    score < 2  simple    2 <= score < 4  moderate    4 <= score < 5.5  complex    5.5 <= score  advanced

Weights (points): length up to 2.5, depth up to 1, code blocks up to 2, each
domain up to 1.5 (0.5 a term), reasoning cues up to 3 (1 each) plus 1 when they
meet two or more domain terms (reasoning *about* specialised material), tools
1-1.5, images 1, JSON schema 0.75, reasoning_effort 1-2, a large max_tokens 0.5.

Length counts the whole request. Vocabulary and reasoning cues are read from
the system prompt and the last user message only (what is being asked *now*),
each capped at ``_SCAN_CHARS`` so a huge pasted document costs the same as a
page. Patterns are precompiled and match on word boundaries, so "proven" does
not count as "prove" and "sql" inside "mysqlx" does not count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import orjson

from warden.gateway.types import ChatRequest, EmbeddingInput, ImagePart, TextPart

Level = Literal["simple", "moderate", "complex", "advanced"]

# --- token estimate ----------------------------------------------------------

CHARS_PER_TOKEN = 4  # English averages ~4 characters per token across GPT/Claude/Gemini tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators per message
IMAGE_TOKENS = 1_000  # a typical image: OpenAI high detail 1024px ~765, Anthropic ~1,600 at 1.15 MP
TOOL_OVERHEAD_TOKENS = 10


def estimate_tokens(req: ChatRequest) -> int:
    """Rough prompt size in tokens: characters / 4 plus fixed costs per message,
    image and tool. Good to ~20-30% for prose (worse for code and non-Latin
    scripts); used for context-window filtering and reservations, never billing."""
    chars = 0
    tokens = 0
    for message in req.messages:
        tokens += MESSAGE_OVERHEAD_TOKENS
        for part in message.content:
            if isinstance(part, TextPart):
                chars += len(part.text)
            else:
                tokens += IMAGE_TOKENS
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    for tool in req.tools:
        tokens += TOOL_OVERHEAD_TOKENS
        chars += len(tool.name) + len(tool.description) + len(orjson.dumps(tool.parameters))
    if req.response_format is not None and req.response_format.schema is not None:
        chars += len(orjson.dumps(req.response_format.schema))
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


def estimate_input_tokens(inputs: list[EmbeddingInput]) -> list[int]:
    """Each embedding input's size: its token ids counted exactly, a text as above."""
    return [math.ceil(len(i) / CHARS_PER_TOKEN) if isinstance(i, str) else len(i) for i in inputs]


# --- vocabulary ----------------------------------------------------------------

_SCAN_CHARS = 8_000

_DOMAINS: dict[str, tuple[str, ...]] = {
    "code": (
        "algorithm", "refactor", "compile", "compiler", "regex", "concurrency", "race condition",
        "deadlock", "recursion", "async", "await", "stack trace", "traceback", "segfault",
        "big-o", "time complexity", "sql", "query plan", "kubernetes", "dockerfile", "api",
        "unit test", "debug", "memory leak", "mutex", "thread", "typescript", "python", "rust",
        "golang", "javascript", "c\\+\\+",
    ),
    "math": (
        "theorem", "lemma", "proof", "integral", "derivative", "eigenvalue", "eigenvector",
        "matrix", "probability", "bayesian", "differential equation", "topology", "manifold",
        "polynomial", "combinatorics", "induction", "convergence", "stochastic", "variance",
    ),
    "science": (
        "quantum", "thermodynamics", "enzyme", "genome", "protein", "molecule", "catalyst",
        "relativity", "entropy", "pharmacokinetics", "clinical trial",
    ),
    "law_finance": (
        "statute", "liability", "jurisdiction", "indemnity", "tort", "precedent", "compliance",
        "gdpr", "amortization", "derivatives", "hedging", "valuation", "discounted cash flow",
        "arbitrage", "securities",
    ),
}

_REASONING_CUES: tuple[str, ...] = (
    "prove", "step by step", "step-by-step", "derive", "rigorous", "rigorously", "justify",
    "trade-offs", "tradeoffs", "analyze", "analyse", "architect", "design a", "optimize",
    "optimise", "explain why", "compare and contrast", "edge cases", "formally", "counterexample",
    "think carefully",
)


def _alternation(words: tuple[str, ...]) -> str:
    # Terms are regex-ready (only "c\+\+" needs escaping); longest first so
    # "race condition" wins over shorter overlaps.
    return "|".join(sorted(words, key=len, reverse=True))


def _term_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    # (?<!\w)/(?!\w) instead of \b so terms ending in a symbol ("c++") still match on
    # a boundary. The lookahead on the terms' first letters only makes it faster: it
    # rejects most positions before the long alternation is tried (~4x on a 3 kB prompt).
    first = "".join(sorted({re.escape(word[0]) for word in words}))
    return re.compile(rf"(?<!\w)(?=[{first}])(?:{_alternation(words)})(?!\w)", re.IGNORECASE)


def _first_words(words: tuple[str, ...]) -> frozenset[str]:
    """Each term's first word: a text none of them occurs in holds no term."""
    return frozenset(_WORD.findall(word.replace("\\", "").lower())[0] for word in words)


_WORD = re.compile(r"\w+")
# One pattern per domain, with the first words of its terms.
_DOMAIN_PATTERNS: dict[str, tuple[re.Pattern[str], frozenset[str]]] = {
    name: (_term_pattern(words), _first_words(words)) for name, words in _DOMAINS.items()}
_REASONING_PATTERN = _term_pattern(_REASONING_CUES), _first_words(_REASONING_CUES)


def found_terms(text: str, pattern: tuple[re.Pattern[str], frozenset[str]],
                words: set[str] | None) -> list[str]:
    """The distinct terms of ``pattern`` in ``text``, sorted. ``words``: the text's words
    (an ASCII text's, lowercased), to skip a pattern none of whose terms can occur:
    most prompts hold no term of most domains, and a regex tries every position."""
    regex, firsts = pattern
    if words is not None and words.isdisjoint(firsts):
        return []
    return sorted({m.group(0).lower() for m in regex.finditer(text)})


def text_words(text: str) -> set[str] | None:
    """The words ``found_terms`` checks first; None (check nothing) for a text that is
    not ASCII, where case-insensitive matching and ``lower()`` can disagree ("İ")."""
    return set(_WORD.findall(text.lower())) if text.isascii() else None
_CODE_FENCE = re.compile(r"^\s*```", re.MULTILINE)

_THRESHOLDS: tuple[tuple[float, Level], ...] = ((5.5, "advanced"), (4.0, "complex"), (2.0, "moderate"))


@dataclass(slots=True)
class Complexity:
    level: Level
    score: float
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"level": self.level, "score": self.score, "reasons": list(self.reasons)}


def level_for(score: float) -> Level:
    for threshold, level in _THRESHOLDS:
        if score >= threshold:
            return level
    return "simple"


def _focus_text(req: ChatRequest) -> str:
    """System prompt + last user message, each capped."""
    last_user = next((m.text_content for m in reversed(req.messages) if m.role == "user"), "")
    return req.system_text[:_SCAN_CHARS] + "\n" + last_user[-_SCAN_CHARS:]


def score_complexity(req: ChatRequest, *, estimated_tokens: int | None = None) -> Complexity:
    points = 0.0
    reasons: list[str] = []

    def add(amount: float, reason: str) -> None:
        nonlocal points
        points += amount
        reasons.append(f"+{amount:g} {reason}")

    tokens = estimate_tokens(req) if estimated_tokens is None else estimated_tokens
    if tokens > 250:
        # One point per doubling above ~250 tokens, capped: long is harder, but
        # a long document to summarise is not an advanced task by itself.
        add(round(min(2.5, math.log2(tokens / 250)), 2), f"long prompt (~{tokens} tokens)")

    turns = sum(1 for m in req.messages if m.role in ("user", "assistant"))
    if turns >= 10:
        add(1.0, f"deep conversation ({turns} turns)")
    elif turns >= 4:
        add(0.5, f"multi-turn conversation ({turns} turns)")

    fences = sum(len(_CODE_FENCE.findall(m.text_content)) for m in req.messages) // 2
    if fences:
        add(min(2.0, float(fences)), f"{fences} code block{'s' if fences > 1 else ''}")

    text = _focus_text(req)
    words = text_words(text)
    domain_terms = 0
    for domain, pattern in _DOMAIN_PATTERNS.items():
        terms = found_terms(text, pattern, words)
        if terms:
            domain_terms += len(terms)
            add(min(1.5, 0.5 * len(terms)), f"{domain} vocabulary: {', '.join(terms[:5])}")

    cues = found_terms(text, _REASONING_PATTERN, words)
    if cues:
        add(min(3.0, 1.0 * len(cues)), f"asks for reasoning: {', '.join(cues[:5])}")
        if domain_terms >= 2:
            add(1.0, "reasoning over specialised material")

    if req.tools:
        add(1.5 if len(req.tools) > 3 else 1.0, f"{len(req.tools)} tool{'s' if len(req.tools) > 1 else ''} offered")
    if req.has_images:
        images = sum(1 for m in req.messages for p in m.content if isinstance(p, ImagePart))
        add(1.0, f"{images} image{'s' if images > 1 else ''}")
    if req.response_format is not None and req.response_format.type == "json_schema":
        add(0.75, "structured output (JSON schema)")
    if req.reasoning_effort in ("medium", "high"):
        add(2.0 if req.reasoning_effort == "high" else 1.0, f"reasoning_effort={req.reasoning_effort}")
    if req.max_tokens is not None and req.max_tokens >= 8_000:
        add(0.5, f"long answer allowed (max_tokens={req.max_tokens})")

    score = round(points, 2)
    if not reasons:
        reasons.append("short, plain request")
    return Complexity(level=level_for(score), score=score, reasons=reasons)
