"""``/api/agents``: the workspace's agents. Members create and edit their own; admins all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from warden.agents.registry import AgentView
from warden.api.deps import PrincipalDep, ServicesDep
from warden.governance.actions import MAX_PAGE, ActionsPage, list_actions

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


@router.get("/{agent_ref}/actions", response_model=ActionsPage)
async def agent_actions(agent_ref: str, principal: PrincipalDep, services: ServicesDep,
                        limit: int = Query(50, ge=1, le=MAX_PAGE),
                        before: str | None = Query(None, max_length=400,
                                                   description="next_cursor of the previous page")) -> ActionsPage:
    """The agent's tool calls and model calls, newest first, explained (``warden audit explain``).
    An admin sees all of them; another key those it made."""
    await services.spend.flush()  # what this instance has queued is part of the answer
    return await list_actions(services.db, principal, agent_ref, limit=limit, before=before)
