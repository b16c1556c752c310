"""BYOK: the provider keys a workspace brings, encrypted at rest.

What this service guarantees:

- The secret exists in plaintext only in the request that brought it, in the
  resolver's in-memory cache (what the gateway calls with) and in a key test.
  It is stored sealed (vault / keyring), shown as ``sk-…abcd`` plus a
  fingerprint, and never logged, audited or returned.
- Every create, change, test and removal appends an audit event in the same
  transaction as the change; a failed validation writes nothing.
- For the ``default`` workspace only, a provider with no active stored
  credential may use its environment variable (``OPENAI_API_KEY``…). Such a
  credential has the id ``env:<provider>``, is read live from the environment,
  never written to the database and cannot be changed or removed here.

The gateway reads credentials through :meth:`Byok.resolved_credentials`: a
per-workspace in-memory list, decrypted once, dropped on any change made
through this service (and after ``cache_ttl`` seconds, so other instances
converge without a broadcast; ``invalidate`` is there for one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy import invalidation
from warden.tenancy.accounts import DEFAULT_WORKSPACE
from warden.errors import Conflict, NotFound, ValidationFailed
from warden.gateway.catalog import ModelOverride
from warden.gateway.errors import AuthFailed, ConnectFailed, ProviderError, Timeout
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.providers.registry import PROVIDERS, AuthStyle, ProviderInfo
from warden.gateway.types import Endpoint, Timeouts, WireFormat
from warden.tenancy.invalidation import Notify
from warden.vault.keyring import Keyring, encode_key, write_key_file
from warden.logs import redact
from warden.singleflight import SingleFlight
from warden.state.base import FLUSH_ALL
from warden.store import audit
from warden.store.db import Database
from warden.store.models import Credential, Workspace
from warden.store.base import new_id, utcnow
from warden.vault.cipher import Vault, VaultError, fingerprint, mask_secret

log = logging.getLogger("warden.tenancy.credentials")

ENV_PREFIX = "env:"
MAX_KEY_CHARS = 4096
MAX_LABEL_CHARS = 128  # the column's width
MAX_URL_CHARS = 2048
MAX_MODELS = 500
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+-]*$")
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it goes into a header

Status = Literal["active", "disabled"]
Capability = Literal["tools", "vision", "json_schema", "reasoning"]
T = TypeVar("T", bound=BaseModel)


# --- input validation ---------------------------------------------------------


def _check_label(v: str) -> str:
    if not _LABEL.match(v):
        raise ValueError("must start with a letter or digit and hold only letters, digits, "
                         "spaces and . _ : @ / + -")
    return v


def _check_api_key(v: str) -> str:
    v = v.strip()
    if v and not _KEY_CHARS.match(v):
        raise ValueError("must be printable ASCII without spaces")
    return v


def _check_base_url(v: str) -> str:
    v = v.strip()
    if any(c.isspace() or ord(c) < 0x20 for c in v):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(v)
        parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@host)")
    if parts.query or "?" in v:
        raise ValueError("must not have a query string")
    if parts.fragment or "#" in v:
        raise ValueError("must not have a fragment")
    return v.rstrip("/")


Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS), AfterValidator(_check_label)]
BaseUrl = Annotated[str, Field(max_length=MAX_URL_CHARS), AfterValidator(_check_base_url)]
ApiKey = Annotated[str, Field(max_length=MAX_KEY_CHARS), AfterValidator(_check_api_key)]
# USD per million tokens; exact in, a plain JSON number out.
Price = Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False),
                  PlainSerializer(float, return_type=float, when_used="json")]


class ModelSpec(BaseModel):
    """One model a credential serves, with optional overrides of the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    input_price: Price | None = None
    output_price: Price | None = None
    cache_read_price: Price | None = None
    cache_write_price: Price | None = None
    context_window: int | None = Field(default=None, ge=1, le=100_000_000)
    max_output: int | None = Field(default=None, ge=1, le=100_000_000)
    capabilities: tuple[Capability, ...] | None = Field(default=None, max_length=4)
    quality: float | None = Field(default=None, ge=0, le=1)
    free: bool | None = None

    def override(self) -> ModelOverride:
        return ModelOverride.from_dict(self.model_dump(exclude_none=True, exclude={"id"}))


def _unique_models(models: list[ModelSpec] | None) -> list[ModelSpec] | None:
    if models is not None:
        seen: set[str] = set()
        for m in models:
            if m.id in seen:
                raise ValueError(f"model '{m.id}' is listed twice")
            seen.add(m.id)
    return models


ModelList = Annotated[list[ModelSpec], Field(max_length=MAX_MODELS)]


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=40)
    api_key: ApiKey | None = None
    label: Label = "default"
    base_url: BaseUrl | None = None
    models: ModelList | None = None

    _models = field_validator("models")(_unique_models)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v not in PROVIDERS:
            raise ValueError(f"unknown provider '{v[:40]}' (GET /api/providers lists them)")
        return v


class CredentialPatch(BaseModel):
    """Only the fields sent change; ``base_url``/``models`` set to null clear the override."""

    model_config = ConfigDict(extra="forbid")

    label: Label | None = None
    base_url: BaseUrl | None = None
    models: ModelList | None = None
    status: Status | None = None
    api_key: ApiKey | None = None

    _models = field_validator("models")(_unique_models)


def parse_input(model: type[T], data: T | Mapping[str, Any]) -> T:
    """Validate service input (CLI or other callers); the error names the field, never the value."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed.of(exc) from None


def _require(info: ProviderInfo, *, has_key: bool, base_url: str | None) -> None:
    if info.key_required and not has_key:
        raise ValidationFailed(f"api_key: provider '{info.id}' needs an API key", param="api_key")
    if info.base_url is None and not base_url:
        raise ValidationFailed(f"base_url: provider '{info.id}' needs a base URL", param="base_url")


# --- what callers get back ----------------------------------------------------


class CredentialView(BaseModel):
    """The masked view: everything about a credential except the key."""

    id: str
    provider: str
    label: str
    base_url: str | None
    models: list[dict[str, Any]]
    masked: str | None
    fingerprint: str | None
    status: Status
    source: Literal["db", "env"]
    created_by: str | None
    created_at: datetime | None
    last_used_at: datetime | None


class TestResult(BaseModel):
    __test__ = False  # not a pytest class

    ok: bool
    status: Literal["ok", "auth_failed", "unreachable", "error"]
    latency_ms: float
    detail: str
    models_count: int | None = None


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

    def endpoint(self, model: str, timeouts: Timeouts | None = None) -> Endpoint:
        return Endpoint(provider=self.provider, wire=self.wire, base_url=self.base_url, model=model,
                        api_key=self.api_key, auth=self.auth, timeouts=timeouts or Timeouts())


@dataclass(frozen=True, slots=True)
class RotationResult:
    count: int
    new_key_id: str
    key_file_updated: bool  # master.key rewritten (else WARDEN_MASTER_KEY must be updated)


@dataclass(slots=True)
class _CacheEntry:
    expires: float
    creds: list[ResolvedCredential]


# --- the key test -------------------------------------------------------------

TEST_TIMEOUTS = Timeouts(connect=5.0, first_byte=10.0, stream_gap=10.0, total=15.0)


async def probe(cred: ResolvedCredential, timeouts: Timeouts = TEST_TIMEOUTS) -> TestResult:
    """Call the provider's model list (its cheapest authenticated endpoint) with the key."""
    started = time.perf_counter()
    status: Literal["ok", "auth_failed", "unreachable", "error"]
    count = None
    try:
        models = await get_adapter(cred.wire).list_models(cred.endpoint("", timeouts))
    except AuthFailed as exc:
        status, detail = "auth_failed", exc.message
    except (ConnectFailed, Timeout) as exc:
        status, detail = "unreachable", exc.message
    except ProviderError as exc:
        status, detail = "error", exc.message
    except Exception as exc:
        status, detail = "error", f"{cred.provider}: {type(exc).__name__}"
    else:
        status, count = "ok", len(models)
        detail = f"{cred.provider}: key accepted, {count} models listed"
    latency = round((time.perf_counter() - started) * 1000, 1)
    return TestResult(ok=status == "ok", status=status, latency_ms=latency,
                      detail=_scrub(detail, cred.api_key), models_count=count)


def _scrub(text: str, secret: str | None) -> str:
    """Redact key-shaped text, and the key itself whatever its shape (a second guard)."""
    if secret:
        text = text.replace(secret, "[REDACTED]")
    return redact(text)[:500]


# --- the service --------------------------------------------------------------


class Byok:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        cache_ttl: float = 30.0,
        touch_interval: float = 60.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.cache_ttl = cache_ttl
        self.touch_interval = touch_interval
        self._environ = environ  # None: the live process environment
        self._clock = clock
        self._cache: dict[str, _CacheEntry] = {}
        self._reads: SingleFlight[tuple[str, int], list[ResolvedCredential]] = SingleFlight()
        self._generation = 0  # bumped by invalidate(): a build that raced one is not cached
        self.notify: Notify | None = None  # set by the composition root: the broadcast
        self._ws_names: dict[str, str] = {}
        self._touched: dict[str, datetime] = {}
        self._last_flush = clock()
        self._flush_task: asyncio.Task[None] | None = None

    # --- reads ------------------------------------------------------------------

    async def list(self, workspace_id: str) -> list[CredentialView]:
        async with self.db.session() as s:
            rows = list((await s.execute(
                select(Credential).where(Credential.workspace_id == workspace_id)
                .order_by(Credential.created_at, Credential.id)
            )).scalars())
        views = [_view(r) for r in rows]
        if await self._is_default(workspace_id):
            active = {r.provider for r in rows if r.status == "active"}
            views += [_env_view(p, key) for p, key in self._env_keys() if p.id not in active]
        return views

    async def get(self, workspace_id: str, cred_id: str) -> CredentialView:
        if cred_id.startswith(ENV_PREFIX):
            info, key = await self._env_credential(workspace_id, cred_id)
            return _env_view(info, key)
        async with self.db.session() as s:
            return _view(await _load(s, workspace_id, cred_id))

    # --- changes ----------------------------------------------------------------

    async def create(self, workspace_id: str, data: CredentialCreate | Mapping[str, Any], *,
                     actor: str = "cli") -> CredentialView:
        spec = parse_input(CredentialCreate, data)
        info = PROVIDERS[spec.provider]
        _require(info, has_key=bool(spec.api_key), base_url=spec.base_url)
        cred_id = new_id("cred")

        async def tx(s: AsyncSession) -> Credential:
            row = Credential(id=cred_id, workspace_id=workspace_id, provider=spec.provider,
                             label=spec.label, base_url=spec.base_url,
                             models=_dump_models(spec.models), status="active", created_by=actor)
            if spec.api_key:
                self._set_secret(row, spec.api_key)
            s.add(row)
            await _flush_unique(s, spec.provider, spec.label)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="byok.create",
                               target=cred_id, data=_audit_data(row))
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        log.info("credential %s created (%s/%s)", cred_id, row.provider, row.label)
        return _view(row)

    async def update(self, workspace_id: str, cred_id: str,
                     data: CredentialPatch | Mapping[str, Any], *, actor: str = "cli") -> CredentialView:
        patch = parse_input(CredentialPatch, data)
        await self._refuse_env(workspace_id, cred_id)
        sent = patch.model_fields_set
        for name in ("label", "status"):
            if name in sent and getattr(patch, name) is None:
                raise ValidationFailed(f"{name}: may not be null", param=name)

        async def tx(s: AsyncSession) -> Credential:
            row = await _load(s, workspace_id, cred_id)
            info = PROVIDERS[row.provider]
            changed: list[str] = []
            for name in ("label", "base_url", "status"):
                if name in sent and getattr(patch, name) != getattr(row, name):
                    setattr(row, name, getattr(patch, name))
                    changed.append(name)
            if "models" in sent:
                models = _dump_models(patch.models)
                if models != row.models:
                    row.models = models
                    changed.append("models")
            if "api_key" in sent:
                if patch.api_key:
                    self._set_secret(row, patch.api_key)
                else:
                    _clear_secret(row)
                changed.append("api_key")
            elif "base_url" in changed and row.ciphertext is not None:
                # The stored secret goes wherever base_url points: moving it needs the
                # key again, so a stolen admin key cannot redirect it to its own host.
                raise ValidationFailed(
                    "api_key: changing base_url needs the provider key sent again in the same "
                    "request", param="api_key", code="api_key_required")
            _require(info, has_key=row.ciphertext is not None, base_url=row.base_url)
            if not changed:
                return row
            row.updated_at = utcnow()
            await _flush_unique(s, row.provider, row.label)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="byok.update",
                               target=cred_id, data={**_audit_data(row), "changed": changed})
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        return _view(row)

    async def delete(self, workspace_id: str, cred_id: str, *, actor: str = "cli") -> CredentialView:
        await self._refuse_env(workspace_id, cred_id)

        async def tx(s: AsyncSession) -> Credential:
            row = await _load(s, workspace_id, cred_id)
            await s.delete(row)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="byok.delete",
                               target=cred_id, data=_audit_data(row))
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        log.info("credential %s removed", cred_id)
        return _view(row)

    async def test(self, workspace_id: str, cred_id: str, *, actor: str = "cli") -> TestResult:
        """Try the key against the provider; the outcome is audited (never the key)."""
        if cred_id.startswith(ENV_PREFIX):
            info, key = await self._env_credential(workspace_id, cred_id)
            cred = _resolved_env(workspace_id, info, key)
        else:
            async with self.db.session() as s:
                cred = self._resolve_row(await _load(s, workspace_id, cred_id))
        result = await probe(cred)

        async def tx(s: AsyncSession) -> None:
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="byok.test",
                               target=cred_id, data={"provider": cred.provider, "status": result.status,
                                                     "latency_ms": result.latency_ms})

        await self.db.run_tx(tx)
        return result

    # --- the gateway's view -----------------------------------------------------

    async def resolved_credentials(self, workspace_id: str) -> list[ResolvedCredential]:
        """Active credentials with plaintext keys (stored first, then env for ``default``)."""
        now = self._clock()
        hit = self._cache.get(workspace_id)
        if hit is not None and hit.expires > now:
            return list(hit.creds)
        # Concurrent misses share one read; keyed by generation so a request that
        # arrives after an invalidation never joins a read that started before it.
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
        creds: list[ResolvedCredential] = []
        for row in rows:
            try:
                creds.append(self._resolve_row(row))
            except VaultError as exc:  # one bad row must not take the workspace's others down
                log.error("credential %s skipped: %s", row.id, exc.message)
        if await self._is_default(workspace_id):
            stored = {r.provider for r in rows}
            creds += [_resolved_env(workspace_id, p, key) for p, key in self._env_keys()
                      if p.id not in stored]
        if generation == self._generation:
            self._cache[workspace_id] = _CacheEntry(now + self.cache_ttl, creds)
        return creds

    def invalidate(self, workspace_id: str | None = None) -> None:
        """Forget resolved credentials (one workspace, or all): after a change here or elsewhere."""
        self._generation += 1
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    async def _changed(self, workspace_id: str | None) -> None:
        """After a write: drop the cached credentials here, and (broadcast) on other instances."""
        self.invalidate(workspace_id)
        if self.notify is not None:
            await self.notify(invalidation.BYOK, FLUSH_ALL if workspace_id is None else workspace_id)

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

    # --- master key rotation ------------------------------------------------------

    async def rotate_master_key(self, new_key: bytes, *, actor: str = "cli") -> RotationResult:
        """Re-encrypt every credential under ``new_key`` in one transaction.

        With a key file, the file holds ``new + old`` while the rows change, then
        ``new`` alone; a failed transaction puts the old file back.
        """
        new = Vault(new_key)
        key_file = self.keyring.key_file
        previous = key_file.read_text() if key_file is not None else None
        if key_file is not None:
            write_key_file(key_file, encode_key(new_key) + "\n" + previous)
        try:
            count = await self.db.run_tx(lambda s: self._reseal_all(s, new, actor))
        except BaseException:
            if key_file is not None and previous is not None:
                write_key_file(key_file, previous)
            raise
        self.keyring.make_primary(new_key)
        if key_file is not None:
            write_key_file(key_file, [new_key])
            self.keyring.reload()
        await self._changed(None)
        log.warning("master key rotated to id %s: %d credentials re-encrypted", new.key_id, count)
        return RotationResult(count, new.key_id, key_file is not None)

    async def _reseal_all(self, s: AsyncSession, new: Vault, actor: str) -> int:
        rows = list((await s.execute(
            select(Credential).where(Credential.ciphertext.is_not(None))
        )).scalars())
        per_workspace: dict[str, int] = {}
        for row in rows:
            if row.key_id == new.key_id:
                continue
            ids = {"workspace_id": row.workspace_id, "credential_id": row.id}
            plain = self.keyring.open((row.ciphertext, row.key_id), **ids)
            sealed = new.seal(plain, **ids)
            row.ciphertext, row.key_id = sealed.ciphertext, sealed.key_id
            per_workspace[row.workspace_id] = per_workspace.get(row.workspace_id, 0) + 1
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

    # --- helpers ----------------------------------------------------------------

    def _set_secret(self, row: Credential, secret: str) -> None:
        sealed = self.keyring.seal(secret, workspace_id=row.workspace_id, credential_id=row.id)
        row.ciphertext, row.key_id = sealed.ciphertext, sealed.key_id
        row.last4 = secret[-4:] if len(secret) >= 12 else None
        row.masked = mask_secret(secret)
        row.fingerprint = fingerprint(secret)

    def _resolve_row(self, row: Credential) -> ResolvedCredential:
        info = PROVIDERS[row.provider]
        key = None
        if row.ciphertext is not None and row.key_id is not None:
            key = self.keyring.open((row.ciphertext, row.key_id), workspace_id=row.workspace_id,
                                    credential_id=row.id)
        models = _load_models(row.models)
        return ResolvedCredential(
            id=row.id, workspace_id=row.workspace_id, provider=row.provider, label=row.label,
            wire=info.wire, base_url=row.base_url or info.base_url or "", auth=info.auth,
            api_key=key, models=models, source="db", local=info.local,
            overrides={m.id: m.override() for m in models},
        )

    async def _is_default(self, workspace_id: str) -> bool:
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

    def _env_keys(self) -> list[tuple[ProviderInfo, str]]:
        env = os.environ if self._environ is None else self._environ
        found = []
        for info in PROVIDERS.values():
            for name in info.env:
                value = env.get(name, "").strip()
                if value:
                    found.append((info, value))
                    break
        return found

    async def _env_credential(self, workspace_id: str, cred_id: str) -> tuple[ProviderInfo, str]:
        if await self._is_default(workspace_id):
            for info, key in self._env_keys():
                if ENV_PREFIX + info.id == cred_id:
                    return info, key
        raise NotFound(f"no credential '{cred_id[:80]}'", code="credential_not_found")

    async def _refuse_env(self, workspace_id: str, cred_id: str) -> None:
        if cred_id.startswith(ENV_PREFIX):
            info, _ = await self._env_credential(workspace_id, cred_id)  # 404 when not there
            raise Conflict(
                f"credential '{cred_id}' comes from the environment ({' or '.join(info.env)}): "
                "change or unset that variable instead, or add a stored credential to override it",
                code="env_credential_readonly",
            )


# --- row <-> view ---------------------------------------------------------------


async def _load(s: AsyncSession, workspace_id: str, cred_id: str) -> Credential:
    # The workspace is part of the lookup: another workspace's id is simply "not found".
    row = (await s.execute(
        select(Credential).where(Credential.id == cred_id, Credential.workspace_id == workspace_id)
    )).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no credential '{cred_id[:80]}'", code="credential_not_found")
    return row


async def _flush_unique(s: AsyncSession, provider: str, label: str) -> None:
    try:
        await s.flush()
    except IntegrityError:
        raise Conflict(f"a '{provider}' credential labelled '{label}' already exists",
                       code="credential_exists") from None


def _clear_secret(row: Credential) -> None:
    row.ciphertext = row.key_id = row.last4 = row.masked = row.fingerprint = None


def _dump_models(models: list[ModelSpec] | None) -> list[dict[str, Any]] | None:
    if models is None:
        return None
    return [m.model_dump(mode="json", exclude_none=True) for m in models]


def _load_models(raw: list[Any] | None) -> tuple[ModelSpec, ...]:
    out = []
    for entry in raw or ():
        try:
            out.append(ModelSpec.model_validate(entry))
        except ValidationError:
            log.warning("ignoring an invalid stored model entry")
    return tuple(out)


def _audit_data(row: Credential) -> dict[str, Any]:
    return {"provider": row.provider, "label": row.label, "base_url": row.base_url,
            "status": row.status, "fingerprint": row.fingerprint,
            "models": [m.get("id") for m in row.models or []]}


def _view(row: Credential) -> CredentialView:
    return CredentialView(
        id=row.id, provider=row.provider, label=row.label, base_url=row.base_url,
        models=list(row.models or []), masked=row.masked, fingerprint=row.fingerprint,
        status=row.status, source="db", created_by=row.created_by, created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _env_view(info: ProviderInfo, key: str) -> CredentialView:
    return CredentialView(
        id=ENV_PREFIX + info.id, provider=info.id, label="env", base_url=None, models=[],
        masked=mask_secret(key), fingerprint=fingerprint(key), status="active", source="env",
        created_by=None, created_at=None, last_used_at=None,
    )


def _resolved_env(workspace_id: str, info: ProviderInfo, key: str) -> ResolvedCredential:
    return ResolvedCredential(
        id=ENV_PREFIX + info.id, workspace_id=workspace_id, provider=info.id, label="env",
        wire=info.wire, base_url=info.base_url or "", auth=info.auth, api_key=key, models=(),
        source="env", local=info.local, overrides={},
    )
