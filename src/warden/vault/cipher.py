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

import hashlib
import os
import re
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from warden.errors import ConfigError, WardenError

KEY_BYTES = 32
NONCE_BYTES = 12  # 96-bit, the size GCM is specified for
TAG_BYTES = 16
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
