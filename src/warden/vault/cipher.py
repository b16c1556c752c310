"""Provider keys encrypted at rest: AES-256-GCM under one master key.

A sealed secret is ``nonce (12 bytes) || ciphertext || tag (16 bytes)`` as raw
bytes (a ``LargeBinary`` column), stored beside ``key_id``, a fingerprint of the
master key that sealed it. The associated data binds each ciphertext to its
workspace and credential id, so a ciphertext copied to another row or workspace
does not decrypt.

``VaultError`` is both a ``WardenError`` (500 at request time: the message names
what failed, never the key or the plaintext) and a ``ConfigError`` (start-up
refusal: one line the CLI prints as is).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from warden.errors import ConfigError, WardenError

KEY_BYTES = 32
NONCE_BYTES = 12  # 96-bit, the size GCM is specified for
TAG_BYTES = 16
KEY_FILE = "master.key"
_KEY_ID_LABEL = b"warden/master-key-id/v1\x00"
_AAD_LABEL = "warden/byok/v1"
_VENDOR_PREFIX = re.compile(r"[A-Za-z0-9]{1,3}[-_]")  # sk-, gsk_, xai-


class VaultError(WardenError, ConfigError):
    code = "vault_error"


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes  # nonce || ciphertext || tag
    key_id: str


SealedLike = Sealed | tuple[bytes, str]  # a Sealed, or (ciphertext, key_id) from a row


def key_id_of(master_key: bytes) -> str:
    """16 hex chars of a domain-separated SHA-256: names the key, reveals nothing of it."""
    return hashlib.sha256(_KEY_ID_LABEL + master_key).hexdigest()[:16]


def _aad(workspace_id: str, credential_id: str) -> bytes:
    # A JSON array is unambiguous whatever characters the ids hold.
    return orjson.dumps([_AAD_LABEL, workspace_id, credential_id])


class Vault:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise VaultError(f"master key must be {KEY_BYTES} bytes, got {len(master_key)}")
        self._aead = AESGCM(master_key)  # the only place the key is kept
        self.key_id = key_id_of(master_key)

    def __repr__(self) -> str:
        return f"Vault(key_id={self.key_id!r})"

    def seal(self, plaintext: str, *, workspace_id: str, credential_id: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, plaintext.encode(), _aad(workspace_id, credential_id))
        return Sealed(nonce + ct, self.key_id)

    def open(self, sealed: SealedLike, *, workspace_id: str, credential_id: str) -> str:
        blob, key_id = (sealed.ciphertext, sealed.key_id) if isinstance(sealed, Sealed) else sealed
        if key_id != self.key_id:
            raise VaultError(
                f"credential {credential_id} was sealed under master key id {key_id}, "
                f"but the configured master key has id {self.key_id}"
            )
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise VaultError(f"credential {credential_id}: ciphertext is truncated")
        try:
            plain = self._aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(workspace_id, credential_id)
            )
        except InvalidTag:
            raise VaultError(
                f"credential {credential_id} could not be decrypted: "
                "tampered data, or it belongs to another credential or workspace"
            ) from None
        return plain.decode()

    def reseal(
        self, sealed: SealedLike, *, new: Vault, workspace_id: str, credential_id: str
    ) -> Sealed:
        """Re-encrypt under ``new`` (key rotation); the old key no longer opens the result."""
        ids = {"workspace_id": workspace_id, "credential_id": credential_id}
        return new.seal(self.open(sealed, **ids), **ids)


def check_key_matches(vault: Vault, stored_key_ids: set[str]) -> None:
    """Refuse to start when stored ciphertexts were sealed under another master key."""
    foreign = sorted(stored_key_ids - {vault.key_id})
    if foreign:
        raise VaultError(
            f"encrypted credentials were sealed under master key id {', '.join(foreign)} "
            f"but the configured key has id {vault.key_id}: set WARDEN_MASTER_KEY to the "
            "original key or restore its master.key"
        )


def generate_master_key() -> str:
    """A fresh master key, base64 text (the form WARDEN_MASTER_KEY and master.key hold)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def decode_key(text: str, source: str) -> bytes:
    """One master key from its base64 text; ``source`` names where it came from in the error."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise VaultError(f"{source}: must be the base64 of exactly {KEY_BYTES} bytes")
    return raw


def load_master_key(
    settings_master_key_b64: str | None, data_dir: Path, *, has_encrypted_data: bool
) -> bytes:
    """The master key from WARDEN_MASTER_KEY, else ``<data_dir>/master.key``.

    The key file is created (0600) only when no encrypted data exists: a new key
    over existing ciphertexts would make them unreadable. A key file readable by
    group or others is refused, as ssh refuses such a private key.
    """
    if settings_master_key_b64:
        return decode_key(settings_master_key_b64, "WARDEN_MASTER_KEY")
    path = data_dir / KEY_FILE
    if not path.exists():
        if has_encrypted_data:
            raise VaultError(
                f"encrypted credentials exist but no master key: "
                f"set WARDEN_MASTER_KEY or restore {path}"
            )
        _create_key_file(path)
    check_private(path)
    return decode_key(path.read_text(), str(path))


def check_private(path: Path) -> None:
    """Refuse a key file readable by group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(f"{path} is accessible by group or others (mode {mode:o}): chmod 600 it")


@contextmanager
def private_temp_file(path: Path, text: str) -> Iterator[Path]:
    """``text`` in a new 0600 file beside ``path``, synced to disk; removed on exit.

    The caller moves it into place (link or rename), so ``path`` appears whole or not at all.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _create_key_file(path: Path) -> None:
    """Write a new key; hard-linking it into place fails if a racing worker won, whose
    key is then kept."""
    with private_temp_file(path, generate_master_key() + "\n") as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # a concurrent start created it first; use that one


def mask_secret(secret: str) -> str:
    """``sk-…abcd``: a short vendor prefix (up to 3 chars + ``-``/``_``) and the last four.

    Secrets under 12 characters show only ``…``: four characters of a short key
    would give too much of it away.
    """
    if not secret.strip():
        raise ValueError("cannot mask an empty secret")
    if len(secret) < 12:
        return "…"
    prefix = _VENDOR_PREFIX.match(secret)
    return f"{prefix.group() if prefix else ''}…{secret[-4:]}"


def fingerprint(secret: str) -> str:
    """``sha256:`` + 12 hex of SHA-256 of the secret, so users can recognise a key.

    Plain SHA-256 so a user can check it themselves (``printf %s "$KEY" | sha256sum``).
    Not reversible for real provider keys (well over 128 bits of entropy); a short,
    guessable string could be found by brute force, which is why it is shown only
    to admins alongside the masked form.
    """
    if not secret.strip():
        raise ValueError("cannot fingerprint an empty secret")
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]
