"""Model groups: a workspace's named, ordered lists of ``provider/model``.

Routing reads them on every request, so they are cached per workspace and
dropped on any change made through this service (``invalidate`` lets a
cross-instance broadcast drop them too).
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy import invalidation
from warden.tenancy.invalidation import Notify
from warden.errors import Conflict, NotFound, ValidationFailed
from warden.gateway.providers.registry import PROVIDERS
from warden.store import audit
from warden.store.db import Database
from warden.store.models import ModelGroup
from warden.store.base import new_id

RESERVED = {"auto"}
MAX_MEMBERS = 32
# The same rules as JSON-schema patterns, for the OpenAPI document (ECMA regex syntax).
NAME_PATTERN = r"^(?![Aa][Uu][Tt][Oo]$)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MEMBER_PATTERN = "^(" + "|".join(sorted(re.escape(p) for p in PROVIDERS)) + ")/.+$"
_NAME = re.compile(NAME_PATTERN)


def validate_group(name: str, members: list[str]) -> None:
    if not _NAME.match(name) or name.lower() in RESERVED:
        raise ValidationFailed(
            "name must be 1-64 letters, digits, '.', '_' or '-' (not 'auto', no '/')", param="name"
        )
    if not members or len(members) > MAX_MEMBERS:
        raise ValidationFailed(f"members must list 1 to {MAX_MEMBERS} models", param="members")
    for i, member in enumerate(members):
        provider, sep, model = member.partition("/")
        if not sep or not model or provider not in PROVIDERS:
            raise ValidationFailed(
                f"members[{i}] must be 'provider/model' with a known provider", param=f"members.{i}"
            )
    if len(set(members)) != len(members):
        raise ValidationFailed("members must not repeat", param="members")


class ModelGroups:
    def __init__(self, db: Database, *, notify: Notify | None = None) -> None:
        self.db = db
        self._cache: dict[str, dict[str, list[str]]] = {}
        self.notify = notify  # the broadcast to other instances; None: this instance only

    async def for_workspace(self, workspace_id: str) -> dict[str, list[str]]:
        groups = self._cache.get(workspace_id)
        if groups is None:
            groups = {g.name: list(g.members) for g in await self.list(workspace_id)}
            self._cache[workspace_id] = groups
        return groups

    def invalidate(self, workspace_id: str | None = None) -> None:
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    async def list(self, workspace_id: str) -> list[ModelGroup]:
        async with self.db.session() as s:
            q = select(ModelGroup).where(ModelGroup.workspace_id == workspace_id).order_by(ModelGroup.name)
            return list((await s.execute(q)).scalars())

    async def get(self, workspace_id: str, name: str) -> ModelGroup:
        async with self.db.session() as s:
            group = await _find(s, workspace_id, name)
        if group is None:
            raise NotFound(f"no model group '{name}'", code="model_group_not_found")
        return group

    async def put(self, workspace_id: str, name: str, members: list[str], *, actor: str) -> ModelGroup:
        """Create the group, or replace its members."""
        validate_group(name, members)

        async def tx(s: AsyncSession) -> ModelGroup:
            group = await _find(s, workspace_id, name)
            if group is None:
                group = ModelGroup(id=new_id("grp"), workspace_id=workspace_id, name=name,
                                   members=members)
                s.add(group)
            else:
                group.members = members
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"model group '{name}' was created concurrently",
                               code="model_group_exists") from None
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="model_group.put",
                               target=group.id, data={"name": name, "members": members})
            return group

        group = await self.db.run_tx(tx)
        self.invalidate(workspace_id)
        if self.notify is not None:  # other instances drop theirs too
            await self.notify(invalidation.MODEL_GROUPS, workspace_id)
        return group

    async def delete(self, workspace_id: str, name: str, *, actor: str) -> None:
        async def tx(s: AsyncSession) -> None:
            group = await _find(s, workspace_id, name)
            if group is None:
                raise NotFound(f"no model group '{name}'", code="model_group_not_found")
            await s.delete(group)
            await audit.append(s, workspace_id=workspace_id, actor=actor,
                               action="model_group.delete", target=group.id, data={"name": name})

        await self.db.run_tx(tx)
        self.invalidate(workspace_id)
        if self.notify is not None:  # other instances drop theirs too
            await self.notify(invalidation.MODEL_GROUPS, workspace_id)


async def _find(s: AsyncSession, workspace_id: str, name: str) -> ModelGroup | None:
    q = select(ModelGroup).where(ModelGroup.workspace_id == workspace_id, ModelGroup.name == name)
    return (await s.execute(q)).scalar_one_or_none()
