"""``/api/keys``: API keys of the caller's workspace (admin). A key may be bound to an
agent of the workspace (``agent``: its id or name), whose identity it then is: its
gateway calls are that agent's spend."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from warden.tenancy.accounts import NAME_PATTERN
from warden.api.deps import AdminDep, ServicesDep
from warden.errors import PositiveInt32

router = APIRouter(prefix="/api/keys", tags=["keys"])


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, json_schema_extra={"pattern": NAME_PATTERN})
    role: Literal["admin", "member"] = "member"
    rpm_limit: PositiveInt32 | None = None
    tpm_limit: PositiveInt32 | None = None
    agent: str | None = Field(default=None, min_length=1, max_length=64,
                              description="The agent (id or name) the key stands for.")


class KeyView(BaseModel):
    id: str
    name: str
    role: str
    prefix: str
    workspace_id: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    agent_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyView):
    key: str


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, principal: AdminDep, services: ServicesDep) -> KeyCreated:
    created = await services.accounts.create_key(
        principal.workspace_id, body.name, body.role, actor=principal.actor,
        rpm_limit=body.rpm_limit, tpm_limit=body.tpm_limit, agent=body.agent,
    )
    row = await services.accounts.get_key(created.id, workspace_id=principal.workspace_id)
    return KeyCreated(key=created.key, **KeyView.model_validate(row, from_attributes=True).model_dump())


@router.get("", response_model=list[KeyView])
async def list_keys(principal: AdminDep, services: ServicesDep) -> list[KeyView]:
    rows = await services.accounts.list_keys(principal.workspace_id)
    return [KeyView.model_validate(r, from_attributes=True) for r in rows]


@router.delete("/{key_id}", response_model=KeyView)
async def revoke_key(key_id: str, principal: AdminDep, services: ServicesDep) -> KeyView:
    row = await services.accounts.revoke_key(key_id, workspace_id=principal.workspace_id,
                                             actor=principal.actor)
    return KeyView.model_validate(row, from_attributes=True)
