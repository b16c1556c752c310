"""BYOK: the provider keys a workspace brings, encrypted at rest.

What this service guarantees:

- The secret exists in plaintext only in the request that brought it, in the
  gateway's in-memory cache (``CredentialCache``) and in a key test. It is stored
  sealed (vault/keyring.py), shown as ``sk-…abcd`` plus a fingerprint, and never
  logged, audited or returned.
- Every create, change, test and removal appends an audit event in the same
  transaction as the change; a failed validation writes nothing. After a change
  every instance drops its decrypted copies (``CredentialCache.changed``).
- Another workspace's admin may point ``base_url`` only where the address
  policy allows (``warden/netpolicy.py``, the same as the agents' HTTP tools:
  no loopback, private or link-local address in any form, unless
  ``WARDEN_EGRESS_ALLOW`` says so): checked at create, change and test (422
  naming ``base_url``, before any connection) and again at every connect.
  The ``default`` workspace is the operator's and may point anywhere.
- The ``default`` workspace's environment credentials (``env:<provider>``) are
  listed and tested here but cannot be changed or removed: change the variable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.errors import Conflict, NotFound, ValidationFailed, parse_input
from warden.netpolicy import AddressPolicy, EgressError, EgressRefused
from warden.gateway.catalog import ModelSpec
from warden.gateway.providers.registry import PROVIDERS, ProviderInfo
from warden.store import audit
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.models import Credential
from warden.logs import forget_secret, register_secret
from warden.tenancy.credential_cache import ENV_PREFIX, CredentialCache, resolved_env, secret_owner
from warden.tenancy.invalidation import Notify
from warden.tenancy.probe import TestResult, probe
from warden.tenancy.rotation import RotationResult, reseal_credentials
from warden.vault.cipher import fingerprint, mask_secret
from warden.vault.keyring import Keyring

log = logging.getLogger("warden.tenancy.credentials")

MAX_KEY_CHARS = 4096
MAX_LABEL_CHARS = 128  # the column's width
MAX_URL_CHARS = 2048
MAX_MODELS = 500
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+-]*$")
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it goes into a header

Status = Literal["active", "disabled"]


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
# The pattern tells /openapi.json what _check_base_url accepts (a subset: no IPv6 literal).
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_URL_PATTERN = rf"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:{_PORT})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
BaseUrl = Annotated[str, Field(max_length=MAX_URL_CHARS, json_schema_extra={"pattern": _URL_PATTERN}),
                    AfterValidator(_check_base_url)]
ApiKey = Annotated[str, Field(max_length=MAX_KEY_CHARS), AfterValidator(_check_api_key)]


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
    # _require() below, told to the schema: these providers need a key.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"provider": {"enum": sorted(p for p, i in PROVIDERS.items() if i.key_required)}},
               "required": ["provider"]},
        "then": {"required": ["api_key"], "properties": {"api_key": {"type": "string"}}}})

    provider: str = Field(min_length=1, max_length=40, json_schema_extra={"enum": sorted(PROVIDERS)})
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


def _not_null(schema: dict[str, Any]) -> None:
    """Publish a field that may be left out but not sent as null (update() refuses null)."""
    schema["anyOf"] = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]


class CredentialPatch(BaseModel):
    """Only the fields sent change; ``base_url``/``models`` set to null clear the override."""

    model_config = ConfigDict(extra="forbid")

    label: Label | None = Field(default=None, json_schema_extra=_not_null)
    base_url: BaseUrl | None = None
    models: ModelList | None = None
    status: Status | None = Field(default=None, json_schema_extra=_not_null)
    api_key: ApiKey | None = None

    _models = field_validator("models")(_unique_models)


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


# --- the service --------------------------------------------------------------


class Byok:
    def __init__(self, db: Database, keyring: Keyring, *, notify: Notify | None = None,
                 environ: Mapping[str, str] | None = None, egress: AddressPolicy | None = None) -> None:
        self.db = db
        self.keyring = keyring
        # What the gateway calls with; every change made here drops it (and broadcasts).
        self.cache = CredentialCache(db, keyring, notify=notify, environ=environ, egress=egress)

    async def list(self, workspace_id: str) -> list[CredentialView]:
        async with self.db.session() as s:
            rows = list((await s.execute(
                select(Credential).where(Credential.workspace_id == workspace_id)
                .order_by(Credential.created_at, Credential.id)
            )).scalars())
        views = [_view(r) for r in rows]
        if await self.cache.is_default(workspace_id):
            active = {r.provider for r in rows if r.status == "active"}
            views += [_env_view(p, key) for p, key in self.cache.env_keys() if p.id not in active]
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
        await self._check_destination(workspace_id, spec.base_url or info.base_url)
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
        await self.cache.changed(workspace_id)
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
        if "base_url" in sent:  # checked before the transaction: DNS may take a while
            async with self.db.session() as s:
                provider = (await _load(s, workspace_id, cred_id)).provider
            await self._check_destination(workspace_id, patch.base_url or PROVIDERS[provider].base_url)

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
        await self.cache.changed(workspace_id)
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
        forget_secret(secret_owner(cred_id))
        await self.cache.changed(workspace_id)
        log.info("credential %s removed", cred_id)
        return _view(row)

    async def test(self, workspace_id: str, cred_id: str, *, actor: str = "cli") -> TestResult:
        """Try the key against the provider; the outcome is audited (never the key)."""
        if cred_id.startswith(ENV_PREFIX):
            info, key = await self._env_credential(workspace_id, cred_id)
            cred = resolved_env(workspace_id, info, key)
        else:
            async with self.db.session() as s:
                row = await _load(s, workspace_id, cred_id)
            # Refused the same way whatever listens there: /test is no port scanner.
            await self._check_destination(workspace_id, row.base_url or PROVIDERS[row.provider].base_url)
            cred = self.cache.resolve_row(row, default=await self.cache.is_default(workspace_id))
        result = await probe(cred)

        async def tx(s: AsyncSession) -> None:
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="byok.test",
                               target=cred_id, data={"provider": cred.provider, "status": result.status,
                                                     "latency_ms": result.latency_ms})

        await self.db.run_tx(tx)
        return result

    async def rotate_master_key(self, new_key: bytes, *, actor: str = "cli") -> RotationResult:
        """Re-encrypt every credential under ``new_key`` in one transaction (rotation.py)."""
        result = await reseal_credentials(self.db, self.keyring, new_key, actor=actor)
        await self.cache.changed(None)
        return result

    # --- helpers ----------------------------------------------------------------

    async def _check_destination(self, workspace_id: str, base_url: str | None) -> None:
        """Refuse (422) a provider URL of another workspace than ``default`` that the policy forbids."""
        if not base_url or await self.cache.is_default(workspace_id):
            return
        parts = urlsplit(base_url)
        try:
            await self.cache.egress.resolve(parts.hostname or "", parts.port or _default_port(parts.scheme))
        except EgressRefused as exc:
            raise ValidationFailed(f"base_url: {exc}", param="base_url", code="base_url_refused") from None
        except EgressError:
            pass  # a name that does not resolve yet: the check at connect time still applies

    def _set_secret(self, row: Credential, secret: str) -> None:
        register_secret(secret_owner(row.id), secret)  # from now on, redacted wherever it is echoed
        sealed = self.keyring.seal(secret, workspace_id=row.workspace_id, credential_id=row.id)
        row.ciphertext, row.key_id = sealed.ciphertext, sealed.key_id
        row.last4 = secret[-4:] if len(secret) >= 12 else None
        row.masked = mask_secret(secret)
        row.fingerprint = fingerprint(secret)

    async def _env_credential(self, workspace_id: str, cred_id: str) -> tuple[ProviderInfo, str]:
        if await self.cache.is_default(workspace_id):
            for info, key in self.cache.env_keys():
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


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _clear_secret(row: Credential) -> None:
    row.ciphertext = row.key_id = row.last4 = row.masked = row.fingerprint = None


def _dump_models(models: list[ModelSpec] | None) -> list[dict[str, Any]] | None:
    if models is None:
        return None
    return [m.model_dump(mode="json", exclude_none=True) for m in models]


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
