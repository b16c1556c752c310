"""``auto`` for embeddings: one model, the cheapest priced and rated one, from the catalog alone."""

from __future__ import annotations

from decimal import Decimal

from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.deployment import Deployment
from warden.gateway.embeddings import auto_model


def dep(provider: str, model: str, cred: str = "c1", **override) -> Deployment:  # noqa: ANN003
    o = ModelOverride(**override) if override else None
    return Deployment.build(provider, model, cred, catalog=get_catalog(), overrides=o)


def test_the_cheapest_embedding_model_wins_whatever_else_is_served() -> None:
    fleet = [dep("openai", "gpt-4o-mini"), dep("gemini", "gemini-embedding-001"),
             dep("openai", "text-embedding-3-large"), dep("openai", "text-embedding-3-small"),
             dep("mistral", "mistral-embed")]
    assert auto_model(fleet) == "text-embedding-3-small"  # $0.02 per million, the lowest
    assert auto_model(fleet[:3]) == "text-embedding-3-large"  # $0.13 beats gemini's $0.15


def test_ties_go_to_the_better_rated_then_the_name() -> None:
    same = {"input_price": Decimal("0.1"), "output_price": Decimal(0)}
    a = dep("openai", "text-embedding-3-small", **same, quality=0.5)
    b = dep("openai", "text-embedding-3-large", **same, quality=0.9)
    assert auto_model([a, b]) == "text-embedding-3-large"
    c = dep("openai", "text-embedding-3-small", **same, quality=0.9)
    assert auto_model([b, c]) == "text-embedding-3-large"  # equal: by name


def test_none_without_a_priced_rated_embedding_model() -> None:
    assert auto_model([]) is None
    assert auto_model([dep("openai", "gpt-4o-mini")]) is None
    local = dep("ollama", "nomic-embed-text", capabilities=frozenset({"embeddings"}))
    assert auto_model([local]) is None  # free, but unrated: only by name
    rated = dep("ollama", "nomic-embed-text", capabilities=frozenset({"embeddings"}), quality=0.6)
    assert auto_model([rated, dep("openai", "text-embedding-3-small")]) == "nomic-embed-text"
