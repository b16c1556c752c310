"""``/api/webhooks``: a workspace's outbound webhooks (admin): create (the signing
secret is in that reply only), list, remove, the delivery log, and a test event."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from warden.api.deps import AdminDep, ServicesDep
from warden.tenancy.webhooks import DeliveryView, WebhookCreate, WebhookCreated, WebhookView

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


@router.post("", response_model=WebhookCreated, status_code=201)
async def create_webhook(body: WebhookCreate, principal: AdminDep, services: ServicesDep) -> WebhookCreated:
    return await services.webhooks.create(principal.workspace_id, body, actor=principal.actor)


@router.get("", response_model=list[WebhookView])
async def list_webhooks(principal: AdminDep, services: ServicesDep) -> list[WebhookView]:
    return await services.webhooks.list(principal.workspace_id)


@router.delete("/{webhook_id}", response_model=WebhookView)
async def delete_webhook(webhook_id: str, principal: AdminDep, services: ServicesDep) -> WebhookView:
    return await services.webhooks.delete(principal.workspace_id, webhook_id, actor=principal.actor)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryView])
async def list_deliveries(webhook_id: str, principal: AdminDep, services: ServicesDep,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[DeliveryView]:
    return await services.webhooks.deliveries(principal.workspace_id, webhook_id, limit=limit)


@router.post("/{webhook_id}/test", response_model=DeliveryView, status_code=202)
async def test_webhook(webhook_id: str, principal: AdminDep, services: ServicesDep) -> DeliveryView:
    """Queue a ``webhook.test`` event for this webhook; its delivery shows in the log."""
    return await services.webhooks.test(principal.workspace_id, webhook_id, actor=principal.actor)
