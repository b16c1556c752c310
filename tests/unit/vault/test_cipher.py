"""The vault: AES-GCM sealing bound to its context, masking and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import pytest

from warden.errors import ConfigError, WardenError
from warden.vault.cipher import Sealed, Vault, VaultError, fingerprint, mask_secret

SECRET = "sk-proj-Zq8vR2mT5xW9yB3nK7cL1pD4fH6jA0sE"
CTX = {"workspace_id": "default", "credential_id": "cred_1"}


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def vault(key: bytes) -> Vault:
    return Vault(key)


# --- sealing -----------------------------------------------------------------


def test_roundtrip(vault: Vault) -> None:
    sealed = vault.seal(SECRET, **CTX)
    assert SECRET.encode() not in sealed.ciphertext
    assert sealed.key_id == vault.key_id
    assert vault.open(sealed, **CTX) == SECRET


def test_opens_a_row_given_as_ciphertext_and_key_id(vault: Vault) -> None:
    sealed = vault.seal("ünïcode-kéy", **CTX)
    assert vault.open((sealed.ciphertext, sealed.key_id), **CTX) == "ünïcode-kéy"


def test_fresh_nonce_per_seal(vault: Vault) -> None:
    a, b = vault.seal(SECRET, **CTX), vault.seal(SECRET, **CTX)
    assert a.ciphertext[:12] != b.ciphertext[:12]
    assert a.ciphertext != b.ciphertext
    # nonce (12) + plaintext + tag (16)
    assert len(a.ciphertext) == 12 + len(SECRET) + 16


@pytest.mark.parametrize(
    "other",
    [
        {"workspace_id": "other", "credential_id": "cred_1"},
        {"workspace_id": "default", "credential_id": "cred_2"},
        # ids that would collide if the two were simply concatenated
        {"workspace_id": "defaultcred", "credential_id": "_1"},
        {"workspace_id": "", "credential_id": "defaultcred_1"},
    ],
)
def test_swapped_context_fails(vault: Vault, other: dict[str, str]) -> None:
    sealed = vault.seal(SECRET, **CTX)
    with pytest.raises(VaultError) as exc:
        vault.open(sealed, **other)
    assert "could not be decrypted" in str(exc.value)
    assert SECRET not in str(exc.value)


@pytest.mark.parametrize("index", [0, 11, 12, -1])  # nonce, first ct byte, tag
def test_tampered_byte_fails(vault: Vault, index: int) -> None:
    sealed = vault.seal(SECRET, **CTX)
    blob = bytearray(sealed.ciphertext)
    blob[index] ^= 0x01
    with pytest.raises(VaultError, match="tampered"):
        vault.open(Sealed(bytes(blob), sealed.key_id), **CTX)


def test_truncated_ciphertext_fails(vault: Vault) -> None:
    with pytest.raises(VaultError, match="truncated"):
        vault.open(Sealed(b"\x00" * 27, vault.key_id), **CTX)


def test_wrong_master_key_fails_clearly(vault: Vault, key: bytes) -> None:
    sealed = vault.seal(SECRET, **CTX)
    other_key = os.urandom(32)
    other = Vault(other_key)
    with pytest.raises(VaultError) as exc:
        other.open(sealed, **CTX)
    text = str(exc.value)
    assert f"master key id {vault.key_id}" in text and other.key_id in text
    for k in (key, other_key):
        assert k.hex() not in text and base64.b64encode(k).decode() not in text
    assert SECRET not in text


def test_wrong_key_under_a_forged_key_id_still_fails(vault: Vault) -> None:
    sealed = vault.seal(SECRET, **CTX)
    other = Vault(os.urandom(32))
    with pytest.raises(VaultError, match="could not be decrypted"):
        other.open(Sealed(sealed.ciphertext, other.key_id), **CTX)


def test_reseal_rotates_to_new_key(vault: Vault) -> None:
    sealed = vault.seal(SECRET, **CTX)
    new = Vault(os.urandom(32))
    rotated = vault.reseal(sealed, new=new, **CTX)
    assert rotated.key_id == new.key_id != vault.key_id
    assert new.open(rotated, **CTX) == SECRET
    with pytest.raises(VaultError):
        vault.open(rotated, **CTX)
    with pytest.raises(VaultError):  # bytes alone, relabelled with the old id
        vault.open(Sealed(rotated.ciphertext, vault.key_id), **CTX)


def test_master_key_must_be_32_bytes() -> None:
    with pytest.raises(VaultError, match="32 bytes, got 16"):
        Vault(b"k" * 16)


def test_key_id_is_stable_and_reveals_nothing(key: bytes, vault: Vault) -> None:
    assert Vault(key).key_id == vault.key_id
    assert len(vault.key_id) == 16 and int(vault.key_id, 16) >= 0
    for form in (key.hex(), base64.b64encode(key).decode()):
        assert vault.key_id not in form and form not in vault.key_id
    assert key.hex() not in repr(vault) and vault.key_id in repr(vault)
    assert Vault(os.urandom(32)).key_id != vault.key_id


def test_vault_error_is_server_error_and_config_error() -> None:
    err = VaultError("x")
    assert isinstance(err, WardenError) and isinstance(err, ConfigError)
    assert err.status == 500
    assert err.envelope()["error"]["code"] == "vault_error"


# --- masking and fingerprints -----------------------------------------------


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-proj-Zq8vR2mT5xW9yB3nK7cL1pD4fH6jabcd", "sk-…abcd"),
        ("sk-ant-api03-Zq8vR2mT5xW9yB3nK7cLwxyz", "sk-…wxyz"),
        ("gsk_Zq8vR2mT5xW9yB3nK7cL1pD4fH6j1234", "gsk_…1234"),
        ("xai-Zq8vR2mT5xW9yB3nK7cL1pD4fH6j9876", "xai-…9876"),
        ("AIzaSyZq8vR2mT5xW9yB3nK7cL1pD4fH6jQRST", "…QRST"),  # no prefix
        ("-leadingdash-and-more", "…more"),  # separator first: no prefix
        ("ab!-cdefghijklmn", "…klmn"),  # prefix must be alphanumeric
        ("éé-cdefghijklmn", "…klmn"),  # and ASCII
        ("exactly12chr", "…2chr"),
        ("elevenchars", "…"),  # short keys reveal nothing
        ("x", "…"),
    ],
)
def test_mask_secret(secret: str, masked: str) -> None:
    assert mask_secret(secret) == masked


@pytest.mark.parametrize("func", [mask_secret, fingerprint])
@pytest.mark.parametrize("empty", ["", "   ", "\n"])
def test_empty_secret_is_an_error(func: Callable[[str], str], empty: str) -> None:
    with pytest.raises(ValueError, match="empty secret"):
        func(empty)


def test_fingerprint() -> None:
    fp = fingerprint(SECRET)
    assert fp == fingerprint(SECRET)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 12
    assert fp != fingerprint(SECRET + "x")
    # The documented self-check: first 12 hex of plain SHA-256 of the key.
    assert fp == "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest()[:12]
    assert fingerprint("é") == "sha256:" + hashlib.sha256("é".encode()).hexdigest()[:12]
