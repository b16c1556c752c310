"""``/api/model-groups``: named, ordered model lists usable as ``model``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from warden.api.deps import AdminDep, PrincipalDep, ServicesDep
from warden.tenancy.model_groups import MAX_MEMBERS, MEMBER_PATTERN, NAME_PATTERN

router = APIRouter(prefix="/api/model-groups", tags=["routing"])


# Checked by tenancy.model_groups.validate_group (one message per rule); the schema says the same.
_MEMBERS = {"uniqueItems": True, "items": {"type": "string", "pattern": MEMBER_PATTERN}}
_NAME = {"pattern": NAME_PATTERN}


class GroupBody(BaseModel):
    members: list[str] = Field(min_length=1, max_length=MAX_MEMBERS, json_schema_extra=_MEMBERS)


class GroupCreate(GroupBody):
    name: str = Field(min_length=1, max_length=64, json_schema_extra=_NAME)


GroupName = Annotated[str, Path(json_schema_extra=_NAME)]


class GroupView(BaseModel):
    id: str
    name: str
    members: list[str]
    created_at: datetime


def _view(group) -> GroupView:  # noqa: ANN001 - a store row
    return GroupView.model_validate(group, from_attributes=True)


@router.get("", response_model=list[GroupView])
async def list_groups(principal: PrincipalDep, services: ServicesDep) -> list[GroupView]:
    return [_view(g) for g in await services.model_groups.list(principal.workspace_id)]


@router.post("", status_code=201, response_model=GroupView)
async def create_group(body: GroupCreate, principal: AdminDep, services: ServicesDep) -> GroupView:
    return _view(await services.model_groups.put(principal.workspace_id, body.name, body.members,
                                                 actor=principal.actor))


@router.get("/{name}", response_model=GroupView)
async def get_group(name: GroupName, principal: PrincipalDep, services: ServicesDep) -> GroupView:
    return _view(await services.model_groups.get(principal.workspace_id, name))


@router.put("/{name}", response_model=GroupView)
async def put_group(name: GroupName, body: GroupBody, principal: AdminDep, services: ServicesDep) -> GroupView:
    return _view(await services.model_groups.put(principal.workspace_id, name, body.members,
                                                 actor=principal.actor))


@router.delete("/{name}", status_code=204)
async def delete_group(name: GroupName, principal: AdminDep, services: ServicesDep) -> Response:
    await services.model_groups.delete(principal.workspace_id, name, actor=principal.actor)
    return Response(status_code=204)
