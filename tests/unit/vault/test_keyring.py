"""The key ring: several master keys, the first sealing, file-backed rings re-read;
the master key's text form and its file's life cycle."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from warden.vault.cipher import Vault, VaultError
from warden.vault.keyring import (
    Keyring,
    encode_key,
    generate_master_key,
    load_master_key,
    parse_key_list,
    write_key_file,
)

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


# --- key checks and generation ----------------------------------------------


def test_check_opens_names_both_ids() -> None:
    ring = Keyring([os.urandom(32)])
    ring.check_opens(set())
    ring.check_opens({ring.key_id})
    with pytest.raises(VaultError) as exc:
        ring.check_opens({ring.key_id, "deadbeefdeadbeef"})
    assert "deadbeefdeadbeef" in str(exc.value) and ring.key_id in str(exc.value)
    assert "\n" not in str(exc.value)


def test_generate_master_key() -> None:
    a, b = generate_master_key(), generate_master_key()
    assert a != b
    assert len(base64.b64decode(a, validate=True)) == 32


# --- loading the master key -------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_created_0600_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    first = load_master_key(None, data_dir, has_encrypted_data=False)
    path = data_dir / "master.key"
    assert len(first) == 32
    assert _mode(path) == 0o600
    assert _mode(data_dir) & 0o077 == 0
    assert base64.b64decode(path.read_text().strip()) == first
    assert load_master_key(None, data_dir, has_encrypted_data=True) == first
    assert load_master_key(None, data_dir, has_encrypted_data=False) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]  # no temp left


def test_existing_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    load_master_key(None, tmp_path, has_encrypted_data=False)
    assert _mode(tmp_path) == 0o755


def test_env_key_preferred(tmp_path: Path) -> None:
    env_key = os.urandom(32)
    b64 = base64.b64encode(env_key).decode()
    assert load_master_key(b64, tmp_path, has_encrypted_data=True) == env_key
    assert not (tmp_path / "master.key").exists()
    file_key = load_master_key(None, tmp_path, has_encrypted_data=False)
    assert file_key != env_key
    assert load_master_key(b64, tmp_path, has_encrypted_data=True) == env_key


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_malformed_env_key_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(VaultError, match="WARDEN_MASTER_KEY: must be the base64 of exactly 32"):
        load_master_key(bad, tmp_path, has_encrypted_data=False)


def test_refuses_to_create_key_over_existing_data(tmp_path: Path) -> None:
    with pytest.raises(VaultError) as exc:
        load_master_key(None, tmp_path, has_encrypted_data=True)
    assert str(exc.value) == (
        "encrypted credentials exist but no master key: "
        f"set WARDEN_MASTER_KEY or restore {tmp_path / 'master.key'}"
    )
    assert not (tmp_path / "master.key").exists()


def test_key_file_open_to_group_refused(tmp_path: Path) -> None:
    load_master_key(None, tmp_path, has_encrypted_data=False)
    path = tmp_path / "master.key"
    path.chmod(0o640)
    with pytest.raises(VaultError, match="chmod 600"):
        load_master_key(None, tmp_path, has_encrypted_data=True)


def test_corrupt_key_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("garbage\n")
    path.chmod(0o600)
    with pytest.raises(VaultError, match="master.key: must be the base64 of exactly 32 bytes"):
        load_master_key(None, tmp_path, has_encrypted_data=False)


def test_key_file_written_by_a_racing_start_is_kept(tmp_path: Path) -> None:
    # Simulate another worker winning between our existence check and our link:
    # a fresh key file must never replace one that is already in place.
    from warden.vault import keyring as keyring_module

    winner = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "master.key").write_text(winner)
    (tmp_path / "master.key").chmod(0o600)
    keyring_module._create_key_file(tmp_path / "master.key")
    assert (tmp_path / "master.key").read_text() == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


# --- the audit signing key ------------------------------------------------------


def test_audit_signing_key_created_0600_once_and_reused(tmp_path: Path) -> None:
    from warden.vault.keyring import load_audit_signing_key

    first = load_audit_signing_key(None, tmp_path)
    path = tmp_path / "audit-signing.key"
    assert _mode(path) == 0o600
    again = load_audit_signing_key(None, tmp_path)
    message = b"checkpoint"
    again.public_key().verify(first.sign(message), message)  # the same key, read back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit-signing.key"]  # no temp left
    path.chmod(0o644)
    with pytest.raises(VaultError, match="accessible by group or others"):
        load_audit_signing_key(None, tmp_path)


def test_audit_signing_key_from_the_setting_writes_no_file(tmp_path: Path) -> None:
    from warden.vault.keyring import load_audit_signing_key

    seed = os.urandom(32)
    key = load_audit_signing_key(encode_key(seed), tmp_path)
    assert key.private_bytes_raw() == seed
    assert not any(tmp_path.iterdir())
    with pytest.raises(VaultError, match="WARDEN_AUDIT_SIGNING_KEY: must be the base64 of exactly 32"):
        load_audit_signing_key("c2hvcnQ=", tmp_path)
