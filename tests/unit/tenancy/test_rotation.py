"""Master keys on real started services: the start-up refusal of a key that does not
open the stored credentials, and rotation (key file or environment keys)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.app import ADMIN_KEY
from tests.support.tenancy import KEY_A, KEY_B, credential_rows, default_workspace
from warden.config import load_settings
from warden.services import Services
from warden.store.models import AuditEvent, Credential
from warden.vault.cipher import Vault, VaultError
from warden.vault.keyring import Keyring, encode_key


async def test_wrong_master_key_stops_the_start(services: Services, data_dir: Path) -> None:
    await services.byok.create(await default_workspace(services), {"provider": "openai", "api_key": KEY_A})
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
    ws = await default_workspace(services)
    other = await services.accounts.create_workspace("acme")
    await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A})
    await services.byok.create(other.id, {"provider": "groq", "api_key": KEY_B})
    old_key = base64.b64decode((data_dir / "master.key").read_text())
    server_creds = await services.byok.cache.resolved_credentials(ws)  # a running server's cache

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

    rows = await credential_rows(services)
    assert {r.key_id for r in rows} == {Vault(new_key).key_id}
    for row in rows:  # the old key no longer opens anything
        with pytest.raises(VaultError):
            Vault(old_key).open((row.ciphertext, row.key_id), workspace_id=row.workspace_id,
                                credential_id=row.id)
    # The server that still held the old key keeps working: it re-reads master.key.
    services.byok.cache.invalidate()
    assert [c.api_key for c in await services.byok.cache.resolved_credentials(ws)] == [KEY_A]
    assert [c.api_key for c in await services.byok.cache.resolved_credentials(other.id)] == [KEY_B]
    assert server_creds[0].api_key == KEY_A
    fresh = await services.byok.create(ws, {"provider": "groq", "api_key": KEY_B})
    fresh_row = next(r for r in await credential_rows(services) if r.id == fresh.id)
    assert fresh_row.key_id == Vault(new_key).key_id  # sealed under the new key
    async with services.db.session() as s:
        events = [(e.workspace_id, e.data["count"]) for e in (await s.execute(
            select(AuditEvent).where(AuditEvent.action == "vault.rotate").order_by(AuditEvent.seq)
        )).scalars()]
    assert sorted(events[:2]) == sorted([(ws, 1), (other.id, 1)]) and events[2] == (ws, 0)
    await services.close()
    restarted = await Services.start(load_settings(data_dir=data_dir))
    try:
        assert len(await restarted.byok.cache.resolved_credentials(ws)) == 2
    finally:
        await restarted.close()


async def test_rotation_with_env_keys_rolls(data_dir: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    first = await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(old)))
    ws = await default_workspace(first)
    await first.byok.create(ws, {"provider": "openai", "api_key": KEY_A})
    await first.close()
    # Roll every instance to "new,old": both keys open, the new one seals.
    rolled = await Services.start(load_settings(
        data_dir=data_dir, master_key=f"{encode_key(new)},{encode_key(old)}"))
    try:
        assert (await rolled.byok.cache.resolved_credentials(ws))[0].api_key == KEY_A
        result = await rolled.byok.rotate_master_key(new)
        assert (result.count, result.key_file_updated) == (1, False)
        assert not (data_dir / "master.key").exists()
    finally:
        await rolled.close()
    only_new = await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(new)))
    try:
        assert (await only_new.byok.cache.resolved_credentials(ws))[0].api_key == KEY_A
    finally:
        await only_new.close()
    with pytest.raises(VaultError, match="sealed under master key id"):
        await Services.start(load_settings(data_dir=data_dir, master_key=encode_key(old)))


async def test_failed_rotation_changes_nothing(services: Services, data_dir: Path) -> None:
    ws = await default_workspace(services)
    a = await services.byok.create(ws, {"provider": "openai", "api_key": KEY_A, "label": "a"})
    await services.byok.create(ws, {"provider": "openai", "api_key": KEY_B, "label": "b"})
    async with services.db.transaction() as s:  # corrupt one row: rotation must not half-happen
        await s.execute(update(Credential).where(Credential.id == a.id).values(ciphertext=b"x" * 40))
    before_file = (data_dir / "master.key").read_text()
    before_rows = {(r.id, r.ciphertext) for r in await credential_rows(services)}
    with pytest.raises(VaultError):
        await services.byok.rotate_master_key(os.urandom(32))
    assert (data_dir / "master.key").read_text() == before_file
    assert {(r.id, r.ciphertext) for r in await credential_rows(services)} == before_rows
    assert isinstance(services.vault, Keyring) and len(services.vault.key_ids) == 1
