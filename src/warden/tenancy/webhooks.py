"""Outbound webhooks per workspace: which events go where, and :func:`emit`, the one
place an event is queued for them.

- ``emit(s, workspace_id, event_type, data)`` writes one delivery row per active
  webhook of the workspace that wants the event, in the caller's transaction: an
  event is delivered if and only if its cause committed. It lives here, low in the
  layers, so governance (approvals, tiers) and tenancy (budgets) can both call it;
  a plain function over the session, so nothing is injected. With no webhook it
  costs one indexed SELECT. The worker (``webhook_delivery.py``) sends the rows.
- A webhook's URL passes the address policy (``netpolicy.py``, the one tenants'
  provider URLs pass; loopback and private addresses only with
  ``WARDEN_EGRESS_ALLOW``) when it is created and again at every send.
- Its signing secret is generated (or given) at creation, returned that once, and
  stored only sealed with the vault; it is opened only to sign a delivery.
"""

from __future__ import annotations

import re
import secrets as secrets_lib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.errors import NotFound, ValidationFailed, parse_input
from warden.netpolicy import AddressPolicy, EgressError, EgressRefused
from warden.store import audit
from warden.store.base import new_id, utcnow
from warden.store.db import Database, dialect_insert
from warden.store.webhook_models import Webhook, WebhookDelivery
from warden.vault.keyring import Keyring

EVENTS = ("approval.required", "approval.decided", "agent.tier_changed", "budget.threshold")
TEST_EVENT = "webhook.test"
Format = Literal["warden", "slack"]
MAX_URL_CHARS = 2048
_SECRET_CHARS = re.compile(r"^[\x21-\x7e]{16,256}$")


def sealing_ids(row: Webhook) -> dict[str, str]:
    """What a webhook's sealed secret is bound to (the vault's associated data)."""
    return {"workspace_id": row.workspace_id, "credential_id": f"webhook:{row.id}"}


def new_secret() -> str:
    return "whsec_" + secrets_lib.token_urlsafe(32)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    events: list[str] = Field(min_length=1, max_length=len(EVENTS) + 1)
    format: Format = "warden"
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="signing secret; generated when absent (shown once)")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (sign with the webhook secret instead)")
        return v.strip()

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in EVENTS and e != "*"]
        if unknown:
            raise ValueError(f"unknown event {unknown[0][:40]!r}; known: {', '.join(EVENTS)} or '*'")
        return list(dict.fromkeys(v))

    @field_validator("secret")
    @classmethod
    def _secret_shape(cls, v: str | None) -> str | None:
        if v is not None and not _SECRET_CHARS.match(v):
            raise ValueError("must be 16 to 256 printable ASCII characters, no spaces")
        return v


class WebhookView(BaseModel):
    id: str
    url: str
    events: list[str]
    format: str
    active: bool
    created_at: datetime
    created_by: str | None


class WebhookCreated(WebhookView):
    secret: str = Field(description="the signing secret: shown this once, never again")


class DeliveryView(BaseModel):
    id: str
    webhook_id: str
    event_type: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    log: list[dict[str, Any]]
    created_at: datetime
    delivered_at: datetime | None


def _view(row: Webhook) -> WebhookView:
    return WebhookView(id=row.id, url=row.url, events=list(row.events), format=row.format, active=row.active,
                       created_at=row.created_at, created_by=row.created_by)


def _delivery_view(row: WebhookDelivery) -> DeliveryView:
    return DeliveryView.model_validate(row, from_attributes=True)


async def emit(s: AsyncSession, workspace_id: str, event_type: str, data: Mapping[str, Any], *,
               event_id: str | None = None, only: str | None = None) -> int:
    """Queue ``event_type`` for every active webhook of the workspace that wants it, in
    ``s``'s transaction. ``event_id`` names the event (one delivery per webhook and id,
    so an event noticed twice is queued once); ``only``: that webhook alone (a test).
    Returns how many deliveries were queued."""
    q = select(Webhook.id, Webhook.events).where(Webhook.workspace_id == workspace_id,
                                                 Webhook.active.is_(True))
    if only is not None:
        q = q.where(Webhook.id == only)
    targets = [wid for wid, events in (await s.execute(q)).all()
               if only is not None or event_type in events or "*" in events]
    if not targets:
        return 0
    now = utcnow()
    event_id = event_id or new_id("evt")
    payload = {"id": event_id, "type": event_type, "workspace_id": workspace_id,
               "created_at": now.isoformat().replace("+00:00", "Z"), "data": dict(data)}
    rows = [{"id": new_id("whd"), "webhook_id": wid, "workspace_id": workspace_id, "event_type": event_type,
             "event_id": event_id, "payload": payload, "status": "pending", "attempts": 0,
             "next_attempt_at": now, "log": [], "created_at": now} for wid in targets]
    result = await s.execute(dialect_insert(s, WebhookDelivery).values(rows)
                             .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))
    return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(rows)


class Webhooks:
    """The admin's side: create, list, remove, read the delivery log, send a test."""

    def __init__(self, db: Database, keyring: Keyring, *, egress: AddressPolicy) -> None:
        self.db = db
        self.keyring = keyring
        self.egress = egress

    async def create(self, workspace_id: str, data: WebhookCreate | Mapping[str, Any], *,
                     actor: str) -> WebhookCreated:
        spec = parse_input(WebhookCreate, data)
        await check_destination(self.egress, spec.url, param="url")
        secret = spec.secret or new_secret()
        row = Webhook(id=new_id("wh"), workspace_id=workspace_id, url=spec.url, events=spec.events,
                      format=spec.format, active=True, created_at=utcnow(), created_by=actor)
        sealed = self.keyring.seal(secret, **sealing_ids(row))
        row.secret_ciphertext, row.secret_key_id = sealed.ciphertext, sealed.key_id

        async def tx(s: AsyncSession) -> None:
            s.add(row)
            await s.flush()
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="webhook.created",
                               target=row.id, data={"url": row.url, "events": row.events, "format": row.format})

        await self.db.run_tx(tx)
        return WebhookCreated(**_view(row).model_dump(), secret=secret)

    async def list(self, workspace_id: str) -> list[WebhookView]:
        async with self.db.session() as s:
            rows = (await s.execute(select(Webhook).where(Webhook.workspace_id == workspace_id)
                                    .order_by(Webhook.created_at, Webhook.id))).scalars()
            return [_view(r) for r in rows]

    async def delete(self, workspace_id: str, webhook_id: str, *, actor: str) -> WebhookView:
        async def tx(s: AsyncSession) -> WebhookView:
            row = await _load(s, workspace_id, webhook_id)
            view = _view(row)
            # Its delivery log goes with it (explicitly: SQLite may not enforce ON DELETE CASCADE).
            await s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                            .execution_options(synchronize_session=False))
            await s.delete(row)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="webhook.deleted",
                               target=webhook_id, data={"url": view.url})
            return view

        return await self.db.run_tx(tx)

    async def deliveries(self, workspace_id: str, webhook_id: str, *, limit: int = 50) -> list[DeliveryView]:
        async with self.db.session() as s:
            await _load(s, workspace_id, webhook_id)
            rows = (await s.execute(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                    .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                                    .limit(limit))).scalars()
            return [_delivery_view(r) for r in rows]

    async def test(self, workspace_id: str, webhook_id: str, *, actor: str) -> DeliveryView:
        """Queue a ``webhook.test`` event for this webhook alone; the worker sends it."""

        async def tx(s: AsyncSession) -> str:
            row = await _load(s, workspace_id, webhook_id)
            event_id = new_id("evt")
            await emit(s, workspace_id, TEST_EVENT, {"webhook_id": row.id, "requested_by": actor},
                       event_id=event_id, only=row.id)
            return event_id

        event_id = await self.db.run_tx(tx)
        async with self.db.session() as s:
            row = (await s.execute(select(WebhookDelivery).where(
                WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.event_id == event_id))).scalar_one()
            return _delivery_view(row)


async def check_destination(egress: AddressPolicy, url: str, *, param: str) -> None:
    """422 when the policy refuses where ``url`` points (before any connection)."""
    parts = urlsplit(url)
    try:
        await egress.resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except EgressRefused as exc:
        raise ValidationFailed(f"{param}: {exc}", param=param, code="url_refused") from None
    except EgressError:
        pass  # a name that does not resolve yet: the check at send time still applies


async def _load(s: AsyncSession, workspace_id: str, webhook_id: str) -> Webhook:
    row = (await s.execute(select(Webhook).where(Webhook.id == webhook_id,
                                                 Webhook.workspace_id == workspace_id))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no webhook '{webhook_id[:80]}'", code="webhook_not_found")
    return row
