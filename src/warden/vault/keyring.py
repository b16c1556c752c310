"""The master keys a process knows: the first seals, any of them opens.

Rotation re-encrypts every credential under a new master key, but instances
that are already running still hold the old one. A key *ring* keeps them all
working during the roll:

- ``WARDEN_MASTER_KEY`` may hold a comma-separated list ``"new,old"``: rows sealed
  under either open; new secrets are sealed under the first. An environment
  cannot change under a running process, so with env keys the procedure is:
  roll instances to ``"new,old"``, run ``warden vault rotate``, roll to ``"new"``.
- ``<data dir>/master.key`` may hold one key per line, first one sealing. The file
  *can* change under a running process, so a ring loaded from it re-reads it when
  it meets a key id it does not know (rows resealed by a rotation elsewhere) and
  before sealing when the file changed (so it never seals under a retired key).
  Rotation writes ``new + old`` first, reseals, then writes ``new`` alone
  (:meth:`Keyring.rolling_to`): at every moment the file opens every row.

Each key is one ``Vault`` (vault/cipher.py); this module chooses between them
and owns the keys' text form and the key file: created 0600 and only when no
encrypted data exists, refused when group or others can read it, replaced
atomically.

The Ed25519 key that signs audit checkpoints (store/checkpoints.py) is kept the
same way, apart from the ring: ``WARDEN_AUDIT_SIGNING_KEY`` or
``<data dir>/audit-signing.key`` (:func:`load_audit_signing_key`).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from warden.vault.cipher import KEY_BYTES, Sealed, SealedLike, Vault, VaultError

KEY_FILE = "master.key"
AUDIT_KEY_FILE = "audit-signing.key"


# --- a key's text form ----------------------------------------------------------


def generate_master_key() -> str:
    """A fresh master key, base64 text (the form WARDEN_MASTER_KEY and master.key hold)."""
    return encode_key(secrets.token_bytes(KEY_BYTES))


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str, source: str) -> bytes:
    """One master key from its base64 text; ``source`` names where it came from in the error."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise VaultError(f"{source}: must be the base64 of exactly {KEY_BYTES} bytes")
    return raw


def parse_key_list(text: str, source: str, sep: str = ",") -> list[bytes]:
    """Keys from ``"k1,k2"`` (env) or one per line (file); blank entries ignored."""
    keys = [decode_key(part, source) for part in text.split(sep) if part.strip()]
    if not keys:
        raise VaultError(f"{source}: holds no key")
    return keys


# --- the key file ---------------------------------------------------------------


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


def write_key_file(path: Path, keys: list[bytes] | str) -> None:
    """Replace ``master.key`` atomically (0600 temp file, fsync, rename).

    ``keys``: the keys (one base64 line each, first seals) or a previous file's text.
    """
    text = keys if isinstance(keys, str) else "".join(encode_key(k) + "\n" for k in keys)
    with private_temp_file(path, text) as tmp:
        os.replace(tmp, path)


# --- the audit signing key -----------------------------------------------------


def load_audit_signing_key(setting_b64: str | None, data_dir: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key: ``WARDEN_AUDIT_SIGNING_KEY`` (base64 of the 32-byte
    Ed25519 seed), else ``<data_dir>/audit-signing.key``, created 0600 on first use
    and refused when group or others can read it, as ``master.key`` is."""
    if setting_b64:
        return Ed25519PrivateKey.from_private_bytes(decode_key(setting_b64, "WARDEN_AUDIT_SIGNING_KEY"))
    path = data_dir / AUDIT_KEY_FILE
    if not path.exists():
        _create_key_file(path)  # 32 random bytes: a master key and an Ed25519 seed alike
    check_private(path)
    return Ed25519PrivateKey.from_private_bytes(decode_key(path.read_text(), str(path)))


# --- the ring -------------------------------------------------------------------


class Keyring:
    """Duck-compatible with ``Vault`` for ``seal``/``open``/``key_id``."""

    def __init__(self, keys: list[bytes], *, key_file: Path | None = None) -> None:
        if not keys:
            raise VaultError("no master key")
        self.key_file = key_file  # set when the keys came from master.key (re-readable)
        self._file_stamp = self._stamp()
        self._vaults: dict[str, Vault] = {}
        self._primary = self._adopt(keys)

    # --- loading ---------------------------------------------------------------

    @classmethod
    def load(cls, master_key_setting: str | None, data_dir: Path, *,
             has_encrypted_data: bool) -> Keyring:
        """From ``WARDEN_MASTER_KEY`` (comma list) or ``master.key`` (one key a line).

        Creating the file (never over existing data) and its permission check are
        :func:`load_master_key`'s; this only adds the several-keys forms.
        """
        if master_key_setting:
            return cls(parse_key_list(master_key_setting, "WARDEN_MASTER_KEY"))
        path = data_dir / KEY_FILE
        if not path.exists() or len(path.read_text().split()) <= 1:
            return cls([load_master_key(None, data_dir, has_encrypted_data=has_encrypted_data)],
                       key_file=path)
        check_private(path)
        return cls(parse_key_list(path.read_text(), str(path), sep="\n"), key_file=path)

    def _adopt(self, keys: list[bytes]) -> Vault:
        vaults = [Vault(k) for k in keys]
        for v in vaults:
            self._vaults.setdefault(v.key_id, v)
        return self._vaults[vaults[0].key_id]

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.key_file is None:
            return None
        try:
            st = self.key_file.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Re-read ``master.key`` (file-backed rings only); True when it changed."""
        stamp = self._stamp()
        if self.key_file is None or stamp is None or stamp == self._file_stamp:
            return False
        check_private(self.key_file)
        keys = parse_key_list(self.key_file.read_text(), str(self.key_file), sep="\n")
        self._primary = self._adopt(keys)  # earlier keys stay known: unrotated rows still open
        self._file_stamp = stamp
        return True

    # --- the Vault surface -------------------------------------------------------

    @property
    def key_id(self) -> str:
        return self._primary.key_id

    @property
    def primary(self) -> Vault:
        return self._primary

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._vaults)

    def __repr__(self) -> str:
        return f"Keyring(primary={self.key_id!r}, known={sorted(self._vaults)!r})"

    def seal(self, plaintext: str, *, workspace_id: str, credential_id: str) -> Sealed:
        self.reload()  # a stat per seal: seals are rare (create / key change)
        return self._primary.seal(plaintext, workspace_id=workspace_id, credential_id=credential_id)

    def open(self, sealed: SealedLike, *, workspace_id: str, credential_id: str) -> str:
        key_id = sealed.key_id if isinstance(sealed, Sealed) else sealed[1]
        vault = self._vaults.get(key_id)
        if vault is None and self.reload():
            vault = self._vaults.get(key_id)
        # An unknown key id falls through to the primary, whose error names both ids.
        return (vault or self._primary).open(sealed, workspace_id=workspace_id,
                                             credential_id=credential_id)

    def check_opens(self, stored_key_ids: set[str]) -> None:
        """Refuse to start when stored ciphertexts were sealed under a key not in the ring."""
        foreign = sorted(stored_key_ids - self.key_ids)
        if foreign:
            raise VaultError(
                f"encrypted credentials were sealed under master key id {', '.join(foreign)} "
                f"but the configured key has id {', '.join(sorted(self.key_ids))}: set "
                "WARDEN_MASTER_KEY to the original key or restore its master.key"
            )

    def make_primary(self, key: bytes) -> Vault:
        """Seal under ``key`` from now on (after a rotation), keeping the others known."""
        vault = Vault(key)
        self._vaults[vault.key_id] = vault
        self._primary = vault
        return vault

    @contextmanager
    def rolling_to(self, new_key: bytes) -> Iterator[None]:
        """The key file's part of a rotation, around the body that re-seals the rows.

        With a key file, it holds ``new + old`` while the body runs (every instance
        opens every row, resealed or not), then ``new`` alone; a body that fails
        puts the old file back. Afterwards ``new_key`` seals here.
        """
        key_file = self.key_file
        previous = key_file.read_text() if key_file is not None else None
        if key_file is not None and previous is not None:
            write_key_file(key_file, encode_key(new_key) + "\n" + previous)
        try:
            yield
        except BaseException:
            if key_file is not None and previous is not None:
                write_key_file(key_file, previous)
            raise
        self.make_primary(new_key)
        if key_file is not None:
            write_key_file(key_file, [new_key])
            self.reload()
