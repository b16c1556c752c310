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
  Rotation writes ``new + old`` first, reseals, then writes ``new`` alone: at every
  moment the file opens every row.

Each key is one ``Vault`` (vault.py); this module only chooses between them.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from warden.vault.cipher import (
    KEY_FILE,
    Sealed,
    SealedLike,
    Vault,
    VaultError,
    check_private,
    decode_key,
    load_master_key,
    private_temp_file,
)


def parse_key_list(text: str, source: str, sep: str = ",") -> list[bytes]:
    """Keys from ``"k1,k2"`` (env) or one per line (file); blank entries ignored."""
    keys = [decode_key(part, source) for part in text.split(sep) if part.strip()]
    if not keys:
        raise VaultError(f"{source}: holds no key")
    return keys


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


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
        the vault's ``load_master_key``; this only adds the several-keys forms.
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


def write_key_file(path: Path, keys: list[bytes] | str) -> None:
    """Replace ``master.key`` atomically (0600 temp file, fsync, rename).

    ``keys``: the keys (one base64 line each, first seals) or a previous file's text.
    """
    text = keys if isinstance(keys, str) else "".join(encode_key(k) + "\n" for k in keys)
    with private_temp_file(path, text) as tmp:
        os.replace(tmp, path)
