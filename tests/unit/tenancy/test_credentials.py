"""The BYOK service on real started services (SQLite in a temp dir) and loopback providers."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tests.support.tenancy import KEY_A, KEY_B, credential_rows, default_workspace
from warden.errors import ValidationFailed
from warden.gateway.catalog import ModelSpec
from warden.services import Services
from warden.store.models import AuditEvent, Credential
from warden.tenancy.credentials import CredentialCreate
from warden.errors import parse_input
from warden.testing.upstream import UpstreamServer
from warden.vault.cipher import VaultError


async def test_swapped_ciphertexts_fail_to_decrypt(services: Services) -> None:
    ws = await default_workspace(services)
    a = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A, "label": "a"})
    b = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_B, "label": "b"})
    ra, rb = await credential_rows(services)
    async with services.db.transaction() as s:
        await s.execute(update(Credential).where(Credential.id == a.id).values(ciphertext=rb.ciphertext))
        await s.execute(update(Credential).where(Credential.id == b.id).values(ciphertext=ra.ciphertext))
    services.byok.cache.invalidate()
    # Each row now holds a valid ciphertext, of the other credential: neither opens.
    assert await services.byok.cache.resolved_credentials(ws) == []
    with pytest.raises(VaultError, match="could not be decrypted"):
        await services.byok.test(ws, a.id)


async def test_update_rules(services: Services) -> None:
    ws = await default_workspace(services)
    local = await services.byok.create(ws, {"provider": "ollama", "api_key": KEY_A})
    assert local.masked == "sk-…abcd"
    cleared = await services.byok.update(ws, local.id, {"api_key": None})  # no key needed: cleared
    assert cleared.masked is None and cleared.fingerprint is None
    assert (await services.byok.cache.resolved_credentials(ws))[0].api_key is None
    async with services.db.session() as s:
        before = len((await s.execute(select(AuditEvent))).all())
    same = await services.byok.update(ws, local.id, {"label": "default"})  # no change: no event
    assert same.label == "default"
    async with services.db.session() as s:
        assert len((await s.execute(select(AuditEvent))).all()) == before
    with pytest.raises(ValidationFailed) as exc:
        await services.byok.update(ws, local.id, {"status": None})
    assert exc.value.param == "status"


def test_parse_input_names_the_field_not_the_value() -> None:
    with pytest.raises(ValidationFailed) as exc:
        parse_input(CredentialCreate, {"provider": "openai", "api_key": "bad key with spaces"})
    assert exc.value.param == "api_key" and "spaces" in exc.value.message
    assert "bad key" not in exc.value.message
    spec = CredentialCreate(provider="openai", api_key=" sk-x ")
    assert parse_input(CredentialCreate, spec) is spec and spec.api_key == "sk-x"
    assert ModelSpec(id="m", free=True).override().free is True


async def test_probe_per_wire_format(services: Services) -> None:
    ws = await default_workspace(services)
    async with UpstreamServer("anthropic", api_key=KEY_A, models=["c1"]) as anth, \
            UpstreamServer("gemini", api_key=KEY_B, models=["g1", "g2"]) as gem:
        a = await services.byok.create(ws, {"provider": "anthropic", "api_key": KEY_A,
                                            "base_url": anth.base_url})
        g = await services.byok.create(ws, {"provider": "gemini", "api_key": KEY_B,
                                            "base_url": gem.base_url})
        wrong = await services.byok.create(ws, {"provider": "gemini", "api_key": KEY_A,
                                                "base_url": gem.base_url, "label": "wrong"})
        ra, rg, rw = [await services.byok.test(ws, c.id) for c in (a, g, wrong)]
    assert (ra.status, ra.models_count) == ("ok", 1)
    assert (rg.status, rg.models_count) == ("ok", 2)
    assert gem.requests[0].headers["x-goog-api-key"] == KEY_B
    assert rw.status == "auth_failed" and KEY_A not in rw.detail
