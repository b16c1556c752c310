"""Master-key rotation: every stored credential re-sealed under a new key, in one
transaction, so a failure leaves every row as it was.

The key file's part of the roll is the key ring's (``Keyring.rolling_to``); each
workspace's audit log records how many of its credentials moved, and a rotation
that moved none still leaves a trace in the ``default`` workspace's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.store import audit
from warden.store.db import Database
from warden.store.models import Credential, Workspace
from warden.store.webhook_models import Webhook
from warden.tenancy.accounts import DEFAULT_WORKSPACE
from warden.tenancy.webhooks import sealing_ids
from warden.vault.cipher import Vault
from warden.vault.keyring import Keyring

log = logging.getLogger("warden.tenancy.rotation")


@dataclass(frozen=True, slots=True)
class RotationResult:
    count: int
    new_key_id: str
    key_file_updated: bool  # master.key rewritten (else WARDEN_MASTER_KEY must be updated)


async def reseal_credentials(db: Database, keyring: Keyring, new_key: bytes, *,
                             actor: str) -> RotationResult:
    """Re-encrypt every credential under ``new_key``; from then on it seals here.

    The caller drops the decrypted copies every instance caches (``Byok`` does).
    """
    new = Vault(new_key)
    with keyring.rolling_to(new_key):
        count = await db.run_tx(lambda s: _reseal_all(s, keyring, new, actor))
    log.warning("master key rotated to id %s: %d credentials re-encrypted", new.key_id, count)
    return RotationResult(count, new.key_id, keyring.key_file is not None)


async def _reseal_all(s: AsyncSession, keyring: Keyring, new: Vault, actor: str) -> int:
    rows = list((await s.execute(
        select(Credential).where(Credential.ciphertext.is_not(None))
    )).scalars())
    per_workspace: dict[str, int] = {}
    for row in rows:
        if row.key_id == new.key_id:
            continue
        ids = {"workspace_id": row.workspace_id, "credential_id": row.id}
        plain = keyring.open((row.ciphertext, row.key_id), **ids)
        sealed = new.seal(plain, **ids)
        row.ciphertext, row.key_id = sealed.ciphertext, sealed.key_id
        per_workspace[row.workspace_id] = per_workspace.get(row.workspace_id, 0) + 1
    # Webhook signing secrets are sealed with the same keys (tenancy/webhooks.py).
    for hook in (await s.execute(select(Webhook))).scalars():
        if hook.secret_key_id == new.key_id:
            continue
        ids = sealing_ids(hook)
        sealed = new.seal(keyring.open((hook.secret_ciphertext, hook.secret_key_id), **ids), **ids)
        hook.secret_ciphertext, hook.secret_key_id = sealed.ciphertext, sealed.key_id
        per_workspace[hook.workspace_id] = per_workspace.get(hook.workspace_id, 0) + 1
    if not per_workspace:  # still leave a trace of the rotation
        default = (await s.execute(
            select(Workspace.id).where(Workspace.name == DEFAULT_WORKSPACE)
        )).scalar_one_or_none()
        if default is not None:
            per_workspace[default] = 0
    for ws_id, n in sorted(per_workspace.items()):
        await audit.append(s, workspace_id=ws_id, actor=actor, action="vault.rotate",
                           target=new.key_id, data={"count": n, "new_key_id": new.key_id})
    return sum(per_workspace.values())
