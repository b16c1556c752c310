"""The gateway's credential cache on real started services (SQLite in a temp dir)."""

from __future__ import annotations

from decimal import Decimal

from tests.support.tenancy import KEY_A, KEY_B, default_workspace
from warden.services import Services
from warden.tenancy.credential_cache import CredentialCache


async def test_resolver_decrypts_once_and_follows_changes(services: Services) -> None:
    ws = await default_workspace(services)
    view = await services.byok.create(ws, {
        "provider": "anthropic", "api_key": KEY_A,
        "models": [{"id": "claude-x", "input_price": "0.8", "output_price": 4, "free": False,
                    "capabilities": ["tools", "vision"], "context_window": 200000}]})
    first = await services.byok.cache.resolved_credentials(ws)
    again = await services.byok.cache.resolved_credentials(ws)
    assert first[0] is again[0]  # cached object: decrypted once
    cred = first[0]
    assert (cred.api_key, cred.auth, cred.wire, cred.base_url) == (
        KEY_A, "x-api-key", "anthropic", "https://api.anthropic.com/v1")
    assert KEY_A not in repr(cred)
    override = cred.overrides["claude-x"]
    assert (override.input_price, override.output_price) == (Decimal("0.8"), Decimal(4))
    assert override.capabilities == frozenset({"tools", "vision"}) and override.free is False
    ep = cred.endpoint("claude-x")
    assert (ep.api_key, ep.model, ep.auth) == (KEY_A, "claude-x", "x-api-key")

    await services.byok.update(ws, view.id, {"api_key": KEY_B})
    assert (await services.byok.cache.resolved_credentials(ws))[0].api_key == KEY_B
    await services.byok.update(ws, view.id, {"status": "disabled"})
    assert await services.byok.cache.resolved_credentials(ws) == []
    await services.byok.update(ws, view.id, {"status": "active"})
    before = (await services.byok.cache.resolved_credentials(ws))[0]
    services.byok.cache.invalidate(ws)
    assert (await services.byok.cache.resolved_credentials(ws))[0] is not before


async def test_cache_expires_for_changes_made_elsewhere(services: Services) -> None:
    ws = await default_workspace(services)
    now = [0.0]
    elsewhere = CredentialCache(services.db, services.vault, cache_ttl=5.0, clock=lambda: now[0])
    assert await elsewhere.resolved_credentials(ws) == []
    await services.byok.create(ws, {"provider": "groq", "api_key": KEY_A})  # another "instance"
    assert await elsewhere.resolved_credentials(ws) == []  # still cached
    now[0] = 6.0
    assert [c.provider for c in await elsewhere.resolved_credentials(ws)] == ["groq"]


async def test_touch_last_used_is_batched(services: Services) -> None:
    ws = await default_workspace(services)
    view = await services.byok.create(ws, {"provider": "groq", "api_key": KEY_A})
    now = [0.0]
    cache = CredentialCache(services.db, services.vault, touch_interval=60.0, clock=lambda: now[0])
    cache.touch_last_used(view.id)
    cache.touch_last_used("env:openai")  # environment credentials have no row: ignored
    assert (await services.byok.get(ws, view.id)).last_used_at is None  # not written per use
    now[0] = 61.0
    cache.touch_last_used(view.id)  # past the interval: a flush is scheduled
    await cache.close()
    assert (await services.byok.get(ws, view.id)).last_used_at is not None
    assert await cache.flush_last_used() == 0


async def test_every_key_held_is_registered_with_the_redactor(services: Services) -> None:
    """Stored keys once opened, environment keys once read (issue 13, item 2); a removed
    credential's key is forgotten."""
    from warden import logs

    plain = "plainStoredKey1234"
    ws = await default_workspace(services)
    view = await services.byok.create(ws, {"provider": "groq", "api_key": plain})
    logs._secrets.clear()  # as in a new process: the key exists only sealed in the database
    assert plain in logs.redact(f"echo {plain}")
    await services.byok.cache.resolved_credentials(ws)
    assert logs.redact(f"echo {plain}") == "echo [REDACTED]"
    await services.byok.delete(ws, view.id)
    assert plain in logs.redact(f"echo {plain}")

    env = CredentialCache(services.db, services.vault, environ={"OPENAI_API_KEY": "plainEnvKey987"})
    assert [key for _, key in env.env_keys()] == ["plainEnvKey987"]
    assert logs.redact("x plainEnvKey987") == "x [REDACTED]"
    logs._secrets.clear()
