"""Model aliases: which pattern wins, what a pattern and a target may be, the
per-workspace cache and its invalidation, the per-workspace bound."""

from __future__ import annotations

import pytest

from warden.errors import Conflict, ValidationFailed
from warden.services import Services
from warden.state.base import FLUSH_ALL
from warden.store.models import ModelAlias
from warden.tenancy import model_aliases
from warden.tenancy.model_aliases import TOPIC, _Table, validate_alias


def test_exact_beats_wildcards_and_the_most_literal_wildcard_wins() -> None:
    t = _Table.of([ModelAlias(pattern=p, target=t) for p, t in [
        ("claude-*", "anthropic/*"), ("claude-opus-*", "big"), ("*-opus-4-8", "odd"),
        ("claude-opus-4-8", "exact"), ("*", "auto")]])
    assert t.resolve("claude-opus-4-8") == "exact"
    assert t.resolve("CLAUDE-Opus-5") == "big"  # names match case-insensitively
    assert t.resolve("claude-haiku-4-5") == "anthropic/*"
    assert t.resolve("gpt-5") == "auto"
    assert _Table.of([]).resolve("anything") is None


def test_equally_specific_wildcards_are_ordered_by_pattern() -> None:
    t = _Table.of([ModelAlias(pattern="b*c", target="2"), ModelAlias(pattern="a*c", target="1"),
                   ModelAlias(pattern="*bc", target="3")])
    assert t.resolve("abc") == "3"  # "*bc" sorts before "a*c"
    assert t.resolve("axc") == "1"
    assert t.resolve("b.c") == "2"  # regex characters are literal
    assert t.resolve("bxc") == "2"


@pytest.mark.parametrize(("pattern", "target"), [
    ("claude-*", "auto"), ("*", "anthropic/*"), ("gpt-5*", "openai/gpt-4o"), ("x@2", "smart"),
    ("a/b:c", "openrouter/meta/llama"),
])
def test_valid_aliases(pattern: str, target: str) -> None:
    validate_alias(pattern, target)


@pytest.mark.parametrize("pattern", ["auto", "AUTO"])
def test_auto_is_reserved(pattern: str) -> None:
    with pytest.raises(Conflict) as err:
        validate_alias(pattern, "smart")
    assert err.value.code == "model_alias_reserved"


@pytest.mark.parametrize(("pattern", "target", "param"), [
    ("a b", "x", "pattern"), ("", "x", "pattern"),
    ("x" * 129, "x", "pattern"), ("x", "nowhere/*", "target"), ("x", "a*b", "target"), ("x", "", "target"),
    ("x", "-lead", "target"),
])
def test_invalid_aliases_name_the_field(pattern: str, target: str, param: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        validate_alias(pattern, target)
    assert err.value.param == param


async def test_cache_invalidation_and_broadcast(services: Services) -> None:
    aliases = services.model_aliases
    ws = (await services.accounts.workspace_by_name("default")).id
    sent: list[tuple[str, str]] = []

    async def notify(topic: str, key: str) -> None:
        sent.append((topic, key))

    aliases.notify = notify
    await aliases.put(ws, "claude-*", "auto", actor="test")
    assert await aliases.resolve(ws, "claude-x") == "auto" and sent == [(TOPIC, ws)]
    await aliases.put(ws, "claude-*", "smart", actor="test")  # an update, not a second row
    assert [a.target for a in await aliases.list(ws)] == ["smart"]
    assert await aliases.resolve(ws, "claude-x") == "smart"
    # A change made elsewhere is seen once this instance hears of it.
    async with services.db.transaction() as s:
        (await s.get(ModelAlias, (await aliases.list(ws))[0].id)).target = "elsewhere"
    assert await aliases.resolve(ws, "claude-x") == "smart"
    aliases.on_message("budgets", ws)  # another topic: kept
    assert await aliases.resolve(ws, "claude-x") == "smart"
    aliases.on_message(TOPIC, ws)
    assert await aliases.resolve(ws, "claude-x") == "elsewhere"
    async with services.db.transaction() as s:
        (await s.get(ModelAlias, (await aliases.list(ws))[0].id)).target = "again"
    aliases.on_message(FLUSH_ALL, FLUSH_ALL)
    assert await aliases.resolve(ws, "claude-x") == "again"
    await aliases.delete(ws, "claude-*", actor="test")
    assert await aliases.resolve(ws, "claude-x") is None and len(sent) == 3


async def test_a_workspace_has_a_bounded_number_of_aliases(services: Services,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_aliases, "MAX_ALIASES", 2)
    ws = (await services.accounts.workspace_by_name("default")).id
    await services.model_aliases.put(ws, "a", "auto", actor="test")
    await services.model_aliases.put(ws, "b", "auto", actor="test")
    with pytest.raises(Conflict) as err:
        await services.model_aliases.put(ws, "c", "auto", actor="test")
    assert err.value.code == "too_many_aliases"
    await services.model_aliases.put(ws, "b", "smart", actor="test")  # changing one is fine
