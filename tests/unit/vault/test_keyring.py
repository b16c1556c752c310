"""The key ring: several master keys, the first sealing, file-backed rings re-read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from warden.vault.keyring import Keyring, encode_key, parse_key_list, write_key_file
from warden.vault.cipher import Vault, VaultError

CTX = {"workspace_id": "ws", "credential_id": "cred_1"}


def test_env_list_first_seals_all_open() -> None:
    new, old = os.urandom(32), os.urandom(32)
    sealed_old = Vault(old).seal("secret-old", **CTX)
    ring = Keyring.load(f"{encode_key(new)}, {encode_key(old)}", Path("/nonexistent"),
                        has_encrypted_data=True)
    assert ring.key_id == Vault(new).key_id and ring.key_file is None
    assert ring.key_ids == {Vault(new).key_id, Vault(old).key_id}
    assert ring.open(sealed_old, **CTX) == "secret-old"
    assert ring.seal("x", **CTX).key_id == Vault(new).key_id
    assert ring.reload() is False  # nothing to re-read
    assert "secret" not in repr(ring) and ring.key_id in repr(ring)


@pytest.mark.parametrize("text", ["", " , ", "abc", encode_key(b"short")])
def test_bad_key_lists_refused(text: str) -> None:
    with pytest.raises(VaultError, match="^WARDEN_MASTER_KEY: "):
        parse_key_list(text, "WARDEN_MASTER_KEY")


def test_unknown_key_id_names_both(tmp_path: Path) -> None:
    ring = Keyring([os.urandom(32)])
    stranger = Vault(os.urandom(32)).seal("s", **CTX)
    with pytest.raises(VaultError) as exc:
        ring.open(stranger, **CTX)
    assert stranger.key_id in str(exc.value) and ring.key_id in str(exc.value)
    with pytest.raises(VaultError, match="no master key"):
        Keyring([])


def test_check_opens() -> None:
    a, b = os.urandom(32), os.urandom(32)
    ring = Keyring([a, b])
    ring.check_opens({Vault(a).key_id, Vault(b).key_id})
    with pytest.raises(VaultError) as exc:
        ring.check_opens({Vault(a).key_id, "deadbeefdeadbeef"})
    msg = str(exc.value)
    assert "deadbeefdeadbeef" in msg and "WARDEN_MASTER_KEY" in msg and "\n" not in msg


def test_file_ring_created_by_vault_then_reread_on_change(tmp_path: Path) -> None:
    ring = Keyring.load(None, tmp_path, has_encrypted_data=False)
    path = tmp_path / "master.key"
    assert ring.key_file == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    first = ring.key_id
    old_row = ring.seal("kept", **CTX)

    # Another process rotates: the file now holds new + old, then new alone.
    new = os.urandom(32)
    write_key_file(path, encode_key(new) + "\n" + path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.seal("fresh", **CTX).key_id == Vault(new).key_id  # seal re-reads a changed file
    write_key_file(path, [new])
    resealed = Vault(new).seal("moved", **CTX)
    assert ring.open(resealed, **CTX) == "moved"
    assert ring.open(old_row, **CTX) == "kept"  # keys seen before stay known in memory
    assert first in ring.key_ids and ring.key_id == Vault(new).key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]  # no temp files


def test_file_ring_meets_unknown_id_after_rotation(tmp_path: Path) -> None:
    old = os.urandom(32)
    write_key_file(tmp_path / "master.key", [old])
    ring = Keyring.load(None, tmp_path, has_encrypted_data=True)
    new = os.urandom(32)
    write_key_file(tmp_path / "master.key", [new, old])
    two = Keyring.load(None, tmp_path, has_encrypted_data=True)  # multi-line file
    assert two.key_id == Vault(new).key_id and len(two.key_ids) == 2
    assert ring.open(Vault(new).seal("s", **CTX), **CTX) == "s"  # re-read on the unknown id


def test_multi_key_file_open_to_group_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, [os.urandom(32), os.urandom(32)])
    path.chmod(0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        Keyring.load(None, tmp_path, has_encrypted_data=True)


def test_make_primary() -> None:
    a, b = os.urandom(32), os.urandom(32)
    ring = Keyring([a])
    sealed_a = ring.seal("s", **CTX)
    ring.make_primary(b)
    assert ring.primary.key_id == Vault(b).key_id
    assert ring.seal("t", **CTX).key_id == Vault(b).key_id
    assert ring.open(sealed_a, **CTX) == "s"
