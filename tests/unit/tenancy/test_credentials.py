"""The BYOK service on real started services (SQLite in a temp dir) and loopback providers."""

from __future__ import annotations

import base64
import os
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.app import ADMIN_KEY
from warden.tenancy.credentials import Byok, CredentialCreate, ModelSpec, parse_input
from warden.config import load_settings
from warden.errors import ValidationFailed
from warden.vault.keyring import Keyring, encode_key
from warden.services import Services
from warden.store.models import AuditEvent, Credential
from warden.testing.upstream import UpstreamServer
from warden.vault.cipher import Vault, VaultError

KEY_A = "sk-proj-AAAAaaaa0000111122223333abcd"
KEY_B = "sk-proj-BBBBbbbb4444555566667777efgh"


async def _ws(services: Services) -> str:
    return (await services.accounts.workspace_by_name("default")).id


async def _rows(services: Services) -> list[Credential]:
    async with services.db.session() as s:
        return list((await s.execute(select(Credential).order_by(Credential.label))).scalars())


async def test_swapped_ciphertexts_fail_to_decrypt(services: Services) -> None:
    ws = await _ws(services)
    a = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A, "label": "a"})
    b = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_B, "label": "b"})
    ra, rb = await _rows(services)
    async with services.db.transaction() as s:
        await s.execute(update(Credential).where(Credential.id == a.id).values(ciphertext=rb.ciphertext))
        await s.execute(update(Credential).where(Credential.id == b.id).values(ciphertext=ra.ciphertext))
    services.byok.invalidate()
    # Each row now holds a valid ciphertext, of the other credential: neither opens.
    assert await services.byok.resolved_credentials(ws) == []
    with pytest.raises(VaultError, match="could not be decrypted"):
        await services.byok.test(ws, a.id)


async def test_resolver_decrypts_once_and_follows_changes(services: Services) -> None:
    ws = await _ws(services)
    view = await services.byok.create(ws, {
        "provider": "anthropic", "api_key": KEY_A,
        "models": [{"id": "claude-x", "input_price": "0.8", "output_price": 4, "free": False,
                    "capabilities": ["tools", "vision"], "context_window": 200000}]})
    first = await services.byok.resolved_credentials(ws)
    again = await services.byok.resolved_credentials(ws)
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
    assert (await services.byok.resolved_credentials(ws))[0].api_key == KEY_B
    await services.byok.update(ws, view.id, {"status": "disabled"})
    assert await services.byok.resolved_credentials(ws) == []
    await services.byok.update(ws, view.id, {"status": "active"})
    before = (await services.byok.resolved_credentials(ws))[0]
    services.byok.invalidate(ws)
    assert (await services.byok.resolved_credentials(ws))[0] is not before


async def test_cache_expires_for_changes_made_elsewhere(services: Services) -> None:
    ws = await _ws(services)
    now = [0.0]
    elsewhere = Byok(services.db, services.vault, cache_ttl=5.0, clock=lambda: now[0])
    assert await elsewhere.resolved_credentials(ws) == []
    await services.byok.create(ws, {"provider": "groq", "api_key": KEY_A})  # another "instance"
    assert await elsewhere.resolved_credentials(ws) == []  # still cached
    now[0] = 6.0
    assert [c.provider for c in await elsewhere.resolved_credentials(ws)] == ["groq"]


async def test_touch_last_used_is_batched(services: Services) -> None:
    ws = await _ws(services)
    view = await services.byok.create(ws, {"provider": "groq", "api_key": KEY_A})
    now = [0.0]
    byok = Byok(services.db, services.vault, touch_interval=60.0, clock=lambda: now[0])
    byok.touch_last_used(view.id)
    byok.touch_last_used("env:openai")  # environment credentials have no row: ignored
    assert (await services.byok.get(ws, view.id)).last_used_at is None  # not written per use
    now[0] = 61.0
    byok.touch_last_used(view.id)  # past the interval: a flush is scheduled
    await byok.close()
    assert (await services.byok.get(ws, view.id)).last_used_at is not None
    assert await byok.flush_last_used() == 0


async def test_update_rules(services: Services) -> None:
    ws = await _ws(services)
    local = await services.byok.create(ws, {"provider": "ollama", "api_key": KEY_A})
    assert local.masked == "sk-…abcd"
    cleared = await services.byok.update(ws, local.id, {"api_key": None})  # no key needed: cleared
    assert cleared.masked is None and cleared.fingerprint is None
    assert (await services.byok.resolved_credentials(ws))[0].api_key is None
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
    ws = await _ws(services)
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


# --- master key: start-up refusal and rotation ----------------------------------


async def test_wrong_master_key_stops_the_start(services: Services, data_dir: Path) -> None:
    await services.byok.create(await _ws(services), {"provider": "openai", "api_key": KEY_A})
    await services.close()
    wrong = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(VaultError) as exc:
        await Services.start(load_settings(data_dir=data_dir, master_key=wrong))
    msg = str(exc.value)
    assert "encrypted credentials were sealed under master key id" in msg
    assert "set WARDEN_MASTER_KEY to the original key" in msg and "\n" not in msg
    (data_dir / "master.key").unlink()
    with pytest.raises(VaultError, match="encrypted credentials exist but no master key"):
        await Services.start(load_settings(data_dir=data_dir))
    assert not (data_dir / "master.key").exists()  # never a new key over existing data


async def test_rotation_with_key_file_while_a_server_runs(services: Services, data_dir: Path) -> None:
    ws = await _ws(services)
    other = await services.accounts.create_workspace("acme")
    await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A})
    await services.byok.create(other.id, {"provider": "groq", "api_key": KEY_B})
    old_key = base64.b64decode((data_dir / "master.key").read_text())
    server_creds = await services.byok.resolved_credentials(ws)  # a running server's cache

    admin = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY))
    try:
        new_key = os.urandom(32)
        result = await admin.byok.rotate_master_key(new_key)
        assert (result.count, result.key_file_updated) == (2, True)
        assert result.new_key_id == Vault(new_key).key_id
        assert (data_dir / "master.key").read_text() == encode_key(new_key) + "\n"
        again = await admin.byok.rotate_master_key(new_key)
        assert again.count == 0
    finally:
        await admin.close()

    rows = await _rows(services)
    assert {r.key_id for r in rows} == {Vault(new_key).key_id}
    for row in rows:  # the old key no longer opens anything
        with pytest.raises(VaultError):
            Vault(old_key).open((row.ciphertext, row.key_id), workspace_id=row.workspace_id,
                                credential_id=row.id)
    # The server that still held the old key keeps working: it re-reads master.key.
    services.byok.invalidate()
    assert [c.api_key for c in await services.byok.resolved_credentials(ws)] == [KEY_A]
    assert [c.api_key for c in await services.byok.resolved_credentials(other.id)] == [KEY_B]
    assert server_creds[0].api_key == KEY_A
    fresh = await services.byok.create(ws, {"provider": "groq", "api_key": KEY_B})
    fresh_row = next(r for r in await _rows(services) if r.id == fresh.id)
    assert fresh_row.key_id == Vault(new_key).key_id  # sealed under the new key
    async with services.db.session() as s:
        events = [(e.workspace_id, e.data["count"]) for e in (await s.execute(
            select(AuditEvent).where(AuditEvent.action == "vault.rotate").order_by(AuditEvent.seq)
        )).scalars()]
    assert sorted(events[:2]) == sorted([(ws, 1), (other.id, 1)]) and events[2] == (ws, 0)
    await services.close()
    restarted = await Services.start(load_settings(data_dir=data_dir))
    try:
        assert len(await restarted.byok.resolved_credentials(ws)) == 2
    finally:
        await restarted.close()


async def test_rotation_with_env_keys_rolls(data_dir: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    first = await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(old)))
    ws = await _ws(first)
    await first.byok.create(ws, {"provider": "openai", "api_key": KEY_A})
    await first.close()
    # Roll every instance to "new,old": both keys open, the new one seals.
    rolled = await Services.start(load_settings(
        data_dir=data_dir, master_key=f"{encode_key(new)},{encode_key(old)}"))
    try:
        assert (await rolled.byok.resolved_credentials(ws))[0].api_key == KEY_A
        result = await rolled.byok.rotate_master_key(new)
        assert (result.count, result.key_file_updated) == (1, False)
        assert not (data_dir / "master.key").exists()
    finally:
        await rolled.close()
    only_new = await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(new)))
    try:
        assert (await only_new.byok.resolved_credentials(ws))[0].api_key == KEY_A
    finally:
        await only_new.close()
    with pytest.raises(VaultError, match="sealed under master key id"):
        await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(old)))


async def test_failed_rotation_changes_nothing(services: Services, data_dir: Path) -> None:
    ws = await _ws(services)
    a = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A, "label": "a"})
    await services.byok.create(ws, {"provider": "openai", "api_key": KEY_B, "label": "b"})
    async with services.db.transaction() as s:  # corrupt one row: rotation must not half-happen
        await s.execute(update(Credential).where(Credential.id == a.id).values(ciphertext=b"x" * 40))
    before_file = (data_dir / "master.key").read_text()
    before_rows = {(r.id, r.ciphertext) for r in await _rows(services)}
    with pytest.raises(VaultError):
        await services.byok.rotate_master_key(os.urandom(32))
    assert (data_dir / "master.key").read_text() == before_file
    assert {(r.id, r.ciphertext) for r in await _rows(services)} == before_rows
    assert isinstance(services.vault, Keyring) and len(services.vault.key_ids) == 1
