"""``/api/budgets``: the workspace's budgets with live spend (admin), and
``/api/workspaces/{id}/limits``: a workspace's rate limits (operator: an admin of
the default workspace)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel

from warden.api.deps import AdminDep, RootAdminDep, ServicesDep
from warden.tenancy.budgets import BudgetSpec, RateLimitsSpec

router = APIRouter(prefix="/api/budgets", tags=["budgets"])
limits_router = APIRouter(prefix="/api/workspaces", tags=["workspaces"])


class BudgetView(BaseModel):
    id: str
    scope: str
    scope_id: str
    period: str
    limit_usd: Decimal
    per_request_cap_usd: Decimal | None
    # In the current period; null while the shared state store is unreachable.
    spent_usd: Decimal | None
    reserved_usd: Decimal | None  # held by requests in flight
    remaining_usd: Decimal | None
    updated_at: datetime


class BudgetsView(BaseModel):
    workspace_id: str
    budgets: list[BudgetView]
    rate_limits: RateLimitsSpec


@router.get("", response_model=BudgetsView)
async def list_budgets(principal: AdminDep, services: ServicesDep) -> BudgetsView:
    ws = principal.workspace_id
    rows = await services.budgets.status(ws, services.state)
    return BudgetsView(workspace_id=ws,
                       budgets=[BudgetView.model_validate(r, from_attributes=True) for r in rows],
                       rate_limits=await services.budgets.rate_limits(ws))


@router.put("", response_model=BudgetView)
async def put_budget(body: BudgetSpec, principal: AdminDep, services: ServicesDep) -> BudgetView:
    row = await services.budgets.put(principal.workspace_id, body, actor=principal.actor)
    current = await services.budgets.status(principal.workspace_id, services.state)
    return BudgetView.model_validate(next(b for b in current if b.id == row.id), from_attributes=True)


@router.delete("/{budget_id}", status_code=204)
async def delete_budget(budget_id: str, principal: AdminDep, services: ServicesDep) -> None:
    await services.budgets.delete(principal.workspace_id, budget_id, actor=principal.actor)


@limits_router.get("/{workspace_id}/limits", response_model=RateLimitsSpec)
async def get_limits(workspace_id: str, _: RootAdminDep, services: ServicesDep) -> RateLimitsSpec:
    return await services.budgets.rate_limits(workspace_id)


@limits_router.put("/{workspace_id}/limits", response_model=RateLimitsSpec)
async def put_limits(workspace_id: str, body: RateLimitsSpec, principal: RootAdminDep,
                     services: ServicesDep) -> RateLimitsSpec:
    return await services.budgets.set_rate_limits(workspace_id, body, actor=principal.actor)
