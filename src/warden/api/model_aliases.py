"""``/api/model-aliases``: model names (exact or with ``*``) a workspace serves as
a group, ``auto``, ``provider/model``, ``provider/*`` or a model id."""

from __future__ import annotations

from datetime import datetime

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from warden.api.deps import AdminDep, PrincipalDep, ServicesDep
from warden.tenancy.model_aliases import PATTERN, TARGET

router = APIRouter(prefix="/api/model-aliases", tags=["routing"])


PatternPath = Annotated[str, Path(pattern=PATTERN)]


class AliasBody(BaseModel):
    target: str = Field(pattern=TARGET)


class AliasCreate(AliasBody):
    pattern: str = Field(pattern=PATTERN)


class AliasView(BaseModel):
    id: str
    pattern: str
    target: str
    created_at: datetime


def _view(row) -> AliasView:  # noqa: ANN001 - a store row
    return AliasView.model_validate(row, from_attributes=True)


@router.get("", response_model=list[AliasView])
async def list_aliases(principal: PrincipalDep, services: ServicesDep) -> list[AliasView]:
    return [_view(a) for a in await services.model_aliases.list(principal.workspace_id)]


@router.post("", status_code=201, response_model=AliasView)
async def create_alias(body: AliasCreate, principal: AdminDep, services: ServicesDep) -> AliasView:
    """Create the alias, or point an existing one at a new target."""
    return _view(await services.model_aliases.put(principal.workspace_id, body.pattern, body.target,
                                                  actor=principal.actor))


@router.put("/{pattern:path}", response_model=AliasView)
async def put_alias(pattern: PatternPath, body: AliasBody, principal: AdminDep, services: ServicesDep) -> AliasView:
    return _view(await services.model_aliases.put(principal.workspace_id, pattern, body.target,
                                                  actor=principal.actor))


@router.delete("/{pattern:path}", status_code=204)
async def delete_alias(pattern: PatternPath, principal: AdminDep, services: ServicesDep) -> Response:
    await services.model_aliases.delete(principal.workspace_id, pattern, actor=principal.actor)
    return Response(status_code=204)
