"""Model aliases: a workspace's model names served as other names, so a client's
hard-coded default model (Claude Code's ``claude-opus-4-8``, Codex's ``gpt-5*``) is
served without an API call.

A pattern is an exact name or has ``*`` wildcards (any run of characters); names
match case-insensitively. An exact pattern wins, else the wildcard pattern with the
most literal characters (ties: the alphabetically first). The target is a model
group, ``auto``, ``provider/model``, ``provider/*`` (that provider's best
deployment first) or a model id; it is resolved once, never as an alias again.
Routing asks on every request, so a workspace's aliases are cached and dropped on
any change (broadcast on ``MODEL_ALIASES``; ``on_message`` is the subscriber).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.errors import Conflict, NotFound, ValidationFailed
from warden.gateway.providers.registry import PROVIDERS
from warden.state.base import FLUSH_ALL
from warden.store import audit
from warden.store.base import new_id
from warden.store.db import Database
from warden.store.models import ModelAlias
from warden.tenancy.invalidation import Notify

TOPIC = "model_aliases"  # key: workspace id
MAX_ALIASES = 256
# What a pattern and a target may be (the API publishes the same expressions).
PATTERN = r"^[A-Za-z0-9*][A-Za-z0-9._:/@*-]{0,127}$"
# Provider ids are letters, digits and '-': literal in a regular expression, unescaped.
TARGET = r"^([A-Za-z0-9][A-Za-z0-9._:/@-]{0,159}|(" + "|".join(sorted(PROVIDERS)) + r")/\*)$"
_PATTERN, _TARGET = re.compile(PATTERN), re.compile(TARGET)


def validate_alias(pattern: str, target: str) -> None:
    if not _PATTERN.match(pattern):
        raise ValidationFailed("pattern must be 1-128 letters, digits, '.', '_', ':', '/', '@', '-' "
                               "or '*'", param="pattern")
    if pattern.lower() == "auto":
        raise Conflict("'auto' is the router's name and cannot be an alias", code="model_alias_reserved")
    if not _TARGET.match(target):
        raise ValidationFailed("target must be a model group, 'auto', 'provider/model', "
                               "'provider/*' of a known provider, or a model id", param="target")


@dataclass(slots=True)
class _Table:
    """One workspace's aliases, ready to match."""

    exact: dict[str, str]
    wild: list[tuple[re.Pattern[str], str]]  # most specific first

    @classmethod
    def of(cls, rows: list[ModelAlias]) -> _Table:
        exact = {r.pattern.lower(): r.target for r in rows if "*" not in r.pattern}
        wild = sorted((r for r in rows if "*" in r.pattern),
                      key=lambda r: (-len(r.pattern.replace("*", "")), r.pattern.lower()))
        return cls(exact, [(_compile(r.pattern), r.target) for r in wild])

    def resolve(self, name: str) -> str | None:
        lowered = name.lower()
        target = self.exact.get(lowered)
        if target is not None:
            return target
        return next((t for rx, t in self.wild if rx.fullmatch(lowered)), None)


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.lower().split("*")), re.DOTALL)


class ModelAliases:
    def __init__(self, db: Database, *, notify: Notify | None = None) -> None:
        self.db = db
        self.notify = notify
        self._cache: dict[str, _Table] = {}

    async def resolve(self, workspace_id: str, name: str) -> str | None:
        """The target ``name`` is an alias of in this workspace, or None."""
        table = self._cache.get(workspace_id)
        if table is None:
            table = self._cache[workspace_id] = _Table.of(await self.list(workspace_id))
        return table.resolve(name)

    def invalidate(self, workspace_id: str | None = None) -> None:
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    def on_message(self, topic: str, key: str) -> None:
        """Invalidation subscriber: another instance changed aliases (or the store reconnected)."""
        if topic == TOPIC:
            self.invalidate(key)
        elif topic == FLUSH_ALL:
            self.invalidate()

    async def list(self, workspace_id: str) -> list[ModelAlias]:
        async with self.db.session() as s:
            q = select(ModelAlias).where(ModelAlias.workspace_id == workspace_id).order_by(ModelAlias.pattern)
            return list((await s.execute(q)).scalars())

    async def put(self, workspace_id: str, pattern: str, target: str, *, actor: str) -> ModelAlias:
        """Create the alias, or point it at a new target."""
        validate_alias(pattern, target)

        async def tx(s: AsyncSession) -> ModelAlias:
            row = await _find(s, workspace_id, pattern)
            if row is None:
                count = len((await s.execute(select(ModelAlias.id).where(
                    ModelAlias.workspace_id == workspace_id))).all())
                if count >= MAX_ALIASES:
                    raise Conflict(f"a workspace has at most {MAX_ALIASES} model aliases",
                                   code="too_many_aliases")
                row = ModelAlias(id=new_id("mal"), workspace_id=workspace_id, pattern=pattern, target=target)
                s.add(row)
            else:
                row.target = target
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"model alias '{pattern}' was created concurrently",
                               code="model_alias_exists") from None
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="model_alias.put",
                               target=row.id, data={"pattern": pattern, "target": target})
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        return row

    async def delete(self, workspace_id: str, pattern: str, *, actor: str) -> None:
        async def tx(s: AsyncSession) -> None:
            row = await _find(s, workspace_id, pattern)
            if row is None:
                raise NotFound(f"no model alias '{pattern}'", code="model_alias_not_found")
            await s.delete(row)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="model_alias.delete",
                               target=row.id, data={"pattern": pattern})

        await self.db.run_tx(tx)
        await self._changed(workspace_id)

    async def _changed(self, workspace_id: str) -> None:
        self.invalidate(workspace_id)
        if self.notify is not None:  # other instances drop theirs too
            await self.notify(TOPIC, workspace_id)


async def _find(s: AsyncSession, workspace_id: str, pattern: str) -> ModelAlias | None:
    q = select(ModelAlias).where(ModelAlias.workspace_id == workspace_id, ModelAlias.pattern == pattern)
    return (await s.execute(q)).scalar_one_or_none()
