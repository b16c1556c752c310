"""``/api/agents``: the workspace's agents. Members create and edit their own; admins all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from warden.agents.registry import AgentView
from warden.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/api/agents", tags=["agents"])
# Validated by the service (it names the bad field), so the CLI and the API agree.
AgentBody = Annotated[dict[str, Any], Body()]


@router.post("", status_code=201, response_model=AgentView)
async def create_agent(principal: PrincipalDep, services: ServicesDep,
                       body: AgentBody) -> AgentView:
    agent = await services.agents.create(principal.workspace_id, body, principal=principal)
    return AgentView.of(agent)


@router.get("", response_model=list[AgentView])
async def list_agents(principal: PrincipalDep, services: ServicesDep) -> list[AgentView]:
    return [AgentView.of(a) for a in await services.agents.list(principal.workspace_id)]


@router.get("/{agent_ref}", response_model=AgentView)
async def get_agent(agent_ref: str, principal: PrincipalDep, services: ServicesDep) -> AgentView:
    return AgentView.of(await services.agents.get(principal.workspace_id, agent_ref))


@router.patch("/{agent_ref}", response_model=AgentView)
async def update_agent(agent_ref: str, principal: PrincipalDep, services: ServicesDep,
                       body: AgentBody) -> AgentView:
    agent = await services.agents.update(principal.workspace_id, agent_ref, body, principal=principal)
    return AgentView.of(agent)


@router.delete("/{agent_ref}", response_model=AgentView)
async def delete_agent(agent_ref: str, principal: PrincipalDep, services: ServicesDep) -> AgentView:
    return AgentView.of(await services.agents.delete(principal.workspace_id, agent_ref, principal=principal))
