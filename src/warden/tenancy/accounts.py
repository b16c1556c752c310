"""Workspaces and API keys: creation, listing, revocation and authentication.

Keys are ``wk-`` + 32 random bytes (url-safe) and are stored as SHA-256 only.
Authentication is on every request, so lookups are cached in memory for
``key_cache_ttl`` seconds; a revocation evicts this instance's entry at once
and is broadcast (``state`` invalidation) so other instances drop theirs too.

A key may be bound to an agent of its workspace (``agent_id``): it is that
agent's identity for outside traffic, so its gateway calls are the agent's
spend. The agent is checked on the table itself (tenancy sits below the agent
registry); deleting the agent revokes its keys (``agents/registry.py``).
"""

from __future__ import annotations

import re

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy import invalidation
from warden.errors import INT32_MAX, Conflict, NotFound, Unauthorized, ValidationFailed
from warden.tenancy.invalidation import Notify
from warden.singleflight import SingleFlight
from warden.store import audit
from warden.store.db import Database
from warden.store.agent_models import Agent
from warden.store.models import ApiKey, Workspace
from warden.store.base import new_id, utcnow

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
DEFAULT_WORKSPACE = "default"
KEY_PREFIX = "wk-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every route gets one from the auth dependency."""

    workspace_id: str
    workspace_name: str
    key_id: str
    role: Role
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    agent_id: str | None = None  # the agent the key is bound to: its calls are that agent's

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    key: str  # shown once, never stored
    name: str
    role: Role
    workspace_id: str
    agent_id: str | None = None


def bearer_token(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; None without a header.
    The one parser of that header (HTTP routes and the WebSocket alike)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <key>'")
    return token.strip()


class Accounts:
    def __init__(self, db: Database, *, cache_ttl: float = 5.0, notify: Notify | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.cache_ttl = cache_ttl
        self.notify = notify  # the broadcast to other instances; None: this instance only
        self._clock = clock
        # key hash -> (expires at, principal or None for "no such key")
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # key hash -> the lookup in flight: concurrent misses of one key share it
        self._lookups: SingleFlight[str, Principal | None] = SingleFlight()

    # --- authentication (hot path) -------------------------------------------

    async def authenticate(self, raw_key: str | None) -> Principal:
        if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 128:
            raise Unauthorized("missing or malformed API key: send 'Authorization: Bearer wk-…'")
        digest = hash_key(raw_key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await self._lookup_once(digest, now)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    async def _lookup_once(self, digest: str, now: float) -> Principal | None:
        """Look a key up and cache it; concurrent callers for the same key await one lookup,
        so an expiring entry under load costs one query, not one per waiting request."""

        async def lookup() -> Principal | None:
            principal = await self._lookup(digest)
            if len(self._cache) > 100_000:  # bound memory under a flood of bad keys
                self._cache.clear()
            self._cache[digest] = (now + self.cache_ttl, principal)
            return principal

        return await self._lookups.run(digest, lookup)

    async def _lookup(self, digest: str) -> Principal | None:
        async with self.db.session() as s:
            row = (await s.execute(
                select(ApiKey, Workspace.name).join(Workspace, Workspace.id == ApiKey.workspace_id)
                .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )).first()
        if row is None:
            return None
        key, ws_name = row
        return Principal(key.workspace_id, ws_name, key.id, key.role, key.rpm_limit, key.tpm_limit,
                         key.agent_id)

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached lookups (all, or those of one key id)."""
        if key_id is None:
            self._cache.clear()
            return
        for digest, (_, p) in list(self._cache.items()):
            if p is not None and p.key_id == key_id:
                del self._cache[digest]

    async def forget_everywhere(self, key_ids: list[str]) -> None:
        """Keys revoked outside :meth:`revoke_key` (with their agent): this instance and
        every other one drop their cached lookups now, not after ``cache_ttl``."""
        for key_id in key_ids:
            self.forget(key_id)
            if self.notify is not None:
                await self.notify(invalidation.API_KEY, key_id)

    # --- workspaces -----------------------------------------------------------

    async def create_workspace(self, name: str, *, actor: str = "cli") -> Workspace:
        _check_name(name, "name")

        async def tx(s: AsyncSession) -> Workspace:
            ws = Workspace(id=new_id("ws"), name=name)
            s.add(ws)
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"workspace '{name}' already exists", code="workspace_exists") from None
            await audit.append(s, workspace_id=ws.id, actor=actor, action="workspace.create",
                               target=ws.id, data={"name": name})
            return ws

        return await self.db.run_tx(tx)

    async def list_workspaces(self) -> list[Workspace]:
        async with self.db.session() as s:
            return list((await s.execute(select(Workspace).order_by(Workspace.created_at))).scalars())

    async def workspace_by_name(self, name: str) -> Workspace:
        async with self.db.session() as s:
            ws = (await s.execute(select(Workspace).where(Workspace.name == name))).scalar_one_or_none()
        if ws is None:
            raise NotFound(f"no workspace named '{name}'", code="workspace_not_found")
        return ws

    async def ensure_default_workspace(self) -> Workspace:
        try:
            return await self.workspace_by_name(DEFAULT_WORKSPACE)
        except NotFound:
            try:
                return await self.create_workspace(DEFAULT_WORKSPACE, actor="system")
            except Conflict:  # another instance created it a moment ago
                return await self.workspace_by_name(DEFAULT_WORKSPACE)

    # --- API keys -------------------------------------------------------------

    async def create_key(self, workspace_id: str, name: str, role: Role = "member", *,
                         actor: str = "cli", raw_key: str | None = None,
                         rpm_limit: int | None = None, tpm_limit: int | None = None,
                         agent: str | None = None) -> CreatedKey:
        """``agent``: the id (``agt_…``) or name of an agent of the workspace to bind the key to."""
        _check_name(name, "name")
        _check_limit(rpm_limit, "rpm_limit")
        _check_limit(tpm_limit, "tpm_limit")
        if role not in ROLES:
            raise ValidationFailed("role must be 'admin' or 'member'", param="role")
        raw = raw_key or generate_key()

        async def tx(s: AsyncSession) -> CreatedKey:
            agent_id = None if agent is None else await _agent_id(s, workspace_id, agent)
            key = ApiKey(id=new_id("key"), workspace_id=workspace_id, name=name, role=role,
                         key_hash=hash_key(raw), prefix=raw[:7], rpm_limit=rpm_limit,
                         tpm_limit=tpm_limit, agent_id=agent_id)
            s.add(key)
            try:
                await s.flush()
            except IntegrityError:
                if agent is not None:  # the agent may have been deleted a moment ago
                    raise NotFound(f"no agent '{agent[:80]}'", code="agent_not_found") from None
                raise Conflict("that key already exists", code="key_exists") from None
            data: dict[str, str] = {"name": name, "role": role}
            if agent_id is not None:
                data["agent_id"] = agent_id
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="api_key.create",
                               target=key.id, data=data)
            return CreatedKey(key.id, raw, name, role, workspace_id, agent_id)

        return await self.db.run_tx(tx)

    async def list_keys(self, workspace_id: str | None = None) -> list[ApiKey]:
        q = select(ApiKey).order_by(ApiKey.created_at)
        if workspace_id is not None:
            q = q.where(ApiKey.workspace_id == workspace_id)
        async with self.db.session() as s:
            return list((await s.execute(q)).scalars())

    async def get_key(self, key_id: str, *, workspace_id: str | None = None) -> ApiKey:
        q = select(ApiKey).where(ApiKey.id == key_id)
        if workspace_id is not None:
            q = q.where(ApiKey.workspace_id == workspace_id)
        async with self.db.session() as s:
            key = (await s.execute(q)).scalar_one_or_none()
        if key is None:
            raise NotFound(f"no API key '{key_id}'", code="key_not_found")
        return key

    async def revoke_key(self, key_id: str, *, workspace_id: str | None = None,
                         actor: str = "cli") -> ApiKey:
        async def tx(s: AsyncSession) -> ApiKey:
            q = select(ApiKey).where(ApiKey.id == key_id)
            if workspace_id is not None:
                q = q.where(ApiKey.workspace_id == workspace_id)
            key = (await s.execute(q)).scalar_one_or_none()
            if key is None:
                raise NotFound(f"no API key '{key_id}'", code="key_not_found")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                await audit.append(s, workspace_id=key.workspace_id, actor=actor,
                                   action="api_key.revoke", target=key.id, data={"name": key.name})
            return key

        key = await self.db.run_tx(tx)
        self.forget(key.id)
        if self.notify is not None:  # every other instance drops its cached lookup too
            await self.notify(invalidation.API_KEY, key.id)
        return key

    async def has_key_hash(self, digest: str) -> bool:
        async with self.db.session() as s:
            return (await s.execute(select(ApiKey.id).where(ApiKey.key_hash == digest))).first() is not None


async def _agent_id(s: AsyncSession, workspace_id: str, ref: str) -> str:
    """The id of the workspace's agent ``ref`` (id or name); another workspace's is not found."""
    column = Agent.id if ref.startswith("agt_") else Agent.name
    found = (await s.execute(select(Agent.id).where(Agent.workspace_id == workspace_id, column == ref)
                             .with_for_update())).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no agent '{ref[:80]}'", code="agent_not_found")
    return found


NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # workspace and API-key names (ASCII: they appear in URLs and logs)
_NAME = re.compile(NAME_PATTERN)


def _check_name(value: str, field: str) -> None:
    if not _NAME.match(value):
        raise ValidationFailed(
            f"{field} must be 1-64 letters, digits, '-', '_' or '.'", param=field
        )


def _check_limit(value: int | None, field: str) -> None:
    """The CLI's way in; the API's body model bounds the same fields (an INTEGER column)."""
    if value is not None and (isinstance(value, bool) or not 1 <= value <= INT32_MAX):
        raise ValidationFailed(f"{field} must be a whole number from 1 to {INT32_MAX}", param=field)


async def bootstrap_admin(accounts: Accounts, data_dir: Path, admin_key: str | None) -> Path | None:
    """Make sure the default workspace has an admin key.

    From ``WARDEN_ADMIN_KEY`` when set; otherwise generated once and written to
    ``<data dir>/admin.key`` (0600). Returns the file's path when one was written.
    """
    ws = await accounts.ensure_default_workspace()
    if admin_key:
        if not await accounts.has_key_hash(hash_key(admin_key)):
            await _create_quietly(accounts, ws.id, admin_key)
        return None
    path = data_dir / "admin.key"
    if path.exists():
        raw = path.read_text().strip()
        if raw and not await accounts.has_key_hash(hash_key(raw)):
            await _create_quietly(accounts, ws.id, raw)  # database was reset; the file survives
        return None
    if any(k.role == "admin" and k.revoked_at is None for k in await accounts.list_keys(ws.id)):
        return None
    raw = generate_key()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker got here first; it owns the key
        return None
    with os.fdopen(fd, "w") as fh:
        fh.write(raw + "\n")
    await _create_quietly(accounts, ws.id, raw)
    return path


async def _create_quietly(accounts: Accounts, workspace_id: str, raw: str) -> None:
    try:
        await accounts.create_key(workspace_id, "bootstrap-admin", "admin", actor="system", raw_key=raw)
    except Conflict:
        pass  # created concurrently by another worker
