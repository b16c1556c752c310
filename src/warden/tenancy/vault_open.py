"""Opening the vault at start-up: the master key(s) must open every stored secret.

Its own small module so that ``warden serve``'s prepare step can refuse bad keys
before the welcome without importing every service."""

from __future__ import annotations

from sqlalchemy import select

from warden.config import Settings
from warden.store.db import Database
from warden.store.models import Credential
from warden.store.webhook_models import Webhook
from warden.vault.keyring import Keyring


async def open_vault(db: Database, settings: Settings) -> Keyring:
    """Load the master key(s), refusing to start if they cannot open existing secrets."""
    async with db.session() as s:
        key_ids = {k for k in (await s.execute(select(Credential.key_id).distinct())).scalars() if k}
        key_ids |= set((await s.execute(select(Webhook.secret_key_id).distinct())).scalars())
    keyring = Keyring.load(settings.master_key, settings.data_dir, has_encrypted_data=bool(key_ids))
    keyring.check_opens(key_ids)
    return keyring
