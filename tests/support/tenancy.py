"""Shared pieces of the BYOK tests: two provider keys, the default workspace, the stored rows."""

from __future__ import annotations

from sqlalchemy import select

from warden.services import Services
from warden.store.models import Credential

KEY_A = "sk-proj-AAAAaaaa0000111122223333abcd"
KEY_B = "sk-proj-BBBBbbbb4444555566667777efgh"


async def default_workspace(services: Services) -> str:
    return (await services.accounts.workspace_by_name("default")).id


async def credential_rows(services: Services) -> list[Credential]:
    async with services.db.session() as s:
        return list((await s.execute(select(Credential).order_by(Credential.label))).scalars())
