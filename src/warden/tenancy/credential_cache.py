"""The gateway's BYOK credentials: each workspace's, decrypted once, kept in memory.

- A miss reads the workspace's active credentials and opens their keys; misses
  that arrive together share that one read.
- ``changed`` drops this instance's copy and broadcasts so the other instances
  drop theirs; ``cache_ttl`` bounds how stale a copy gets when a message is lost.
- A use is stamped in memory and written in one batch at most every
  ``touch_interval`` seconds: the hot path never writes.
- Every workspace's credentials but the ``default`` workspace's carry the
  address policy (``egress``): the transport connects them only to addresses
  it allows (``warden/netpolicy.py``). The ``default`` workspace is the
  operator's, whose local model servers (Ollama on loopback) just work.
- For the ``default`` workspace only, a provider with no active stored
  credential may use its environment variable (``OPENAI_API_KEY``…). Such a
  credential has the id ``env:<provider>``, is read live from the environment
  and never written to the database.
- Every key this opens or reads from the environment is registered with the
  log redactor (``logs.register_secret``), so an upstream echoing it back never
  hands it on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select, update

from warden.gateway.catalog import ModelOverride, ModelSpec
from warden.logs import register_secret
from warden.gateway.providers.registry import PROVIDERS, AuthStyle, ProviderInfo
from warden.gateway.types import Endpoint, Timeouts, WireFormat
from warden.netpolicy import AddressPolicy
from warden.singleflight import SingleFlight
from warden.state.base import FLUSH_ALL
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.models import Credential, Workspace
from warden.tenancy import invalidation
from warden.tenancy.accounts import DEFAULT_WORKSPACE
from warden.tenancy.invalidation import Notify
from warden.vault.cipher import VaultError
from warden.vault.keyring import Keyring

log = logging.getLogger("warden.tenancy.credential_cache")

ENV_PREFIX = "env:"


@dataclass(frozen=True, slots=True)
class ResolvedCredential:
    """A usable credential for the gateway: plaintext key, effective base URL."""

    id: str
    workspace_id: str
    provider: str
    label: str
    wire: WireFormat
    base_url: str  # the override, else the provider's default
    auth: AuthStyle
    api_key: str | None = field(repr=False)
    models: tuple[ModelSpec, ...]
    source: Literal["db", "env"]
    local: bool
    # model id -> catalog override, built once here so the hot path only looks up.
    overrides: Mapping[str, ModelOverride] = field(compare=False, repr=False)
    # Where the transport may connect with it: None (the default workspace) anywhere.
    egress: AddressPolicy | None = field(compare=False, repr=False)

    def endpoint(self, model: str, timeouts: Timeouts | None = None) -> Endpoint:
        """Where and how to call ``model`` with this key (the gateway and the key test alike)."""
        return Endpoint(provider=self.provider, wire=self.wire, base_url=self.base_url, model=model,
                        api_key=self.api_key, auth=self.auth, timeouts=timeouts or Timeouts(),
                        egress=self.egress)


@dataclass(slots=True)
class _CacheEntry:
    expires: float
    creds: list[ResolvedCredential]


class CredentialCache:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        notify: Notify | None = None,
        cache_ttl: float = 30.0,
        touch_interval: float = 60.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        egress: AddressPolicy | None = None,
    ) -> None:
        self.db = db
        # Where other workspaces' credentials may connect (WARDEN_EGRESS_ALLOW widens it).
        self.egress = egress or AddressPolicy()
        self.keyring = keyring
        self.notify = notify  # the broadcast to other instances; None: this instance only
        self.cache_ttl = cache_ttl
        self.touch_interval = touch_interval
        self._environ = environ  # None: the live process environment
        self._clock = clock
        self._cache: dict[str, _CacheEntry] = {}
        self._reads: SingleFlight[tuple[str, int], list[ResolvedCredential]] = SingleFlight()
        self._generation = 0  # bumped by invalidate(): a read that raced one is not cached
        self._ws_names: dict[str, str] = {}
        self._touched: dict[str, datetime] = {}
        self._last_flush = clock()
        self._flush_task: asyncio.Task[None] | None = None

    # --- reads ------------------------------------------------------------------

    async def resolved_credentials(self, workspace_id: str) -> list[ResolvedCredential]:
        """Active credentials with plaintext keys (stored first, then env for ``default``)."""
        now = self._clock()
        hit = self._cache.get(workspace_id)
        if hit is not None and hit.expires > now:
            return list(hit.creds)
        # Keyed by generation so a request that arrives after an invalidation never
        # joins a read that started before it.
        creds = await self._reads.run((workspace_id, self._generation),
                                      lambda: self._read_credentials(workspace_id, now))
        return list(creds)

    async def _read_credentials(self, workspace_id: str, now: float) -> list[ResolvedCredential]:
        generation = self._generation
        async with self.db.session() as s:
            rows = list((await s.execute(
                select(Credential).where(Credential.workspace_id == workspace_id,
                                         Credential.status == "active")
                .order_by(Credential.created_at, Credential.id)
            )).scalars())
        default = await self.is_default(workspace_id)
        creds: list[ResolvedCredential] = []
        for row in rows:
            try:
                creds.append(self.resolve_row(row, default=default))
            except VaultError as exc:  # one bad row must not take the workspace's others down
                log.error("credential %s skipped: %s", row.id, exc.message)
        if default:
            stored = {r.provider for r in rows}
            creds += [resolved_env(workspace_id, p, key) for p, key in self.env_keys()
                      if p.id not in stored]
        if generation == self._generation:
            self._cache[workspace_id] = _CacheEntry(now + self.cache_ttl, creds)
        return creds

    def resolve_row(self, row: Credential, *, default: bool) -> ResolvedCredential:
        """A stored credential with its key opened (raises ``VaultError`` when it does not open).

        ``default``: the row is the ``default`` workspace's, whose calls go anywhere.
        """
        info = PROVIDERS[row.provider]
        key = None
        if row.ciphertext is not None and row.key_id is not None:
            key = self.keyring.open((row.ciphertext, row.key_id), workspace_id=row.workspace_id,
                                    credential_id=row.id)
            register_secret(secret_owner(row.id), key)
        models = _load_models(row.models)
        return ResolvedCredential(
            id=row.id, workspace_id=row.workspace_id, provider=row.provider, label=row.label,
            wire=info.wire, base_url=row.base_url or info.base_url or "", auth=info.auth,
            api_key=key, models=models, source="db", local=info.local,
            overrides={m.id: m.override() for m in models}, egress=None if default else self.egress,
        )

    async def is_default(self, workspace_id: str) -> bool:
        """Whether this is the ``default`` workspace, the only one environment keys serve."""
        name = self._ws_names.get(workspace_id)
        if name is None:
            async with self.db.session() as s:
                name = (await s.execute(
                    select(Workspace.name).where(Workspace.id == workspace_id)
                )).scalar_one_or_none()
            if name is None:
                return False
            self._ws_names[workspace_id] = name  # names never change
        return name == DEFAULT_WORKSPACE

    def env_keys(self) -> list[tuple[ProviderInfo, str]]:
        """Each provider whose environment variable holds a key, with that key."""
        env = os.environ if self._environ is None else self._environ
        found = []
        for info in PROVIDERS.values():
            for name in info.env:
                value = env.get(name, "").strip()
                if value:
                    register_secret(f"env:{name}", value)
                    found.append((info, value))
                    break
        return found

    # --- changes ----------------------------------------------------------------

    def invalidate(self, workspace_id: str | None = None) -> None:
        """Forget resolved credentials (one workspace, or all): after a change here or elsewhere."""
        self._generation += 1
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    async def changed(self, workspace_id: str | None) -> None:
        """After a write: drop the cached credentials here, and (broadcast) on other instances."""
        self.invalidate(workspace_id)
        if self.notify is not None:
            await self.notify(invalidation.BYOK, FLUSH_ALL if workspace_id is None else workspace_id)

    # --- last use -----------------------------------------------------------------

    def touch_last_used(self, cred_id: str) -> None:
        """Note a use; written in one batch at most every ``touch_interval`` seconds."""
        if cred_id.startswith(ENV_PREFIX):
            return
        self._touched[cred_id] = utcnow()
        if self._clock() - self._last_flush >= self.touch_interval and (
            self._flush_task is None or self._flush_task.done()
        ):
            self._flush_task = asyncio.get_running_loop().create_task(self.flush_last_used())

    async def flush_last_used(self) -> int:
        """Write pending ``last_used_at`` stamps; returns how many credentials were updated."""
        self._last_flush = self._clock()
        pending, self._touched = self._touched, {}
        if not pending:
            return 0
        try:
            async with self.db.transaction() as s:
                for cred_id, ts in pending.items():
                    await s.execute(update(Credential).where(Credential.id == cred_id)
                                    .values(last_used_at=ts).execution_options(synchronize_session=False))
        except Exception as exc:
            log.warning("could not record credential use: %s", type(exc).__name__)
            return 0
        return len(pending)

    async def close(self) -> None:
        if self._flush_task is not None:
            await self._flush_task
        await self.flush_last_used()


def secret_owner(cred_id: str) -> str:
    """The name a stored credential's key is registered under with the log redactor."""
    return f"cred:{cred_id}"


def resolved_env(workspace_id: str, info: ProviderInfo, key: str) -> ResolvedCredential:
    """The credential an environment variable gives the ``default`` workspace."""
    return ResolvedCredential(
        id=ENV_PREFIX + info.id, workspace_id=workspace_id, provider=info.id, label="env",
        wire=info.wire, base_url=info.base_url or "", auth=info.auth, api_key=key, models=(),
        source="env", local=info.local, overrides={}, egress=None,
    )


def _load_models(raw: list[Any] | None) -> tuple[ModelSpec, ...]:
    out = []
    for entry in raw or ():
        try:
            out.append(ModelSpec.model_validate(entry))
        except ValidationError:
            log.warning("ignoring an invalid stored model entry")
    return tuple(out)
