"""``/api/workspaces``: tenants (admin of the ``default`` workspace only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from warden.tenancy.accounts import NAME_PATTERN
from warden.api.deps import RootAdminDep, ServicesDep

router = APIRouter(prefix="/api/workspaces", tags=["workspaces"])


class WorkspaceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, json_schema_extra={"pattern": NAME_PATTERN})


class WorkspaceView(BaseModel):
    id: str
    name: str
    created_at: datetime


@router.post("", status_code=201, response_model=WorkspaceView)
async def create_workspace(body: WorkspaceCreate, principal: RootAdminDep,
                           services: ServicesDep) -> WorkspaceView:
    ws = await services.accounts.create_workspace(body.name, actor=principal.actor)
    return WorkspaceView.model_validate(ws, from_attributes=True)


@router.get("", response_model=list[WorkspaceView])
async def list_workspaces(_: RootAdminDep, services: ServicesDep) -> list[WorkspaceView]:
    return [WorkspaceView.model_validate(w, from_attributes=True)
            for w in await services.accounts.list_workspaces()]
