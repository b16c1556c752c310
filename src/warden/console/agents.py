"""Agents: each agent's tier; one agent's maturity progress toward the next tier (what
is still needed), feedback and recent runs; an admin changes the tier with a reason.

The same services as ``/api/agents/{ref}/maturity``, ``/feedback``, ``/api/runs`` and
``PUT /api/agents/{ref}/tier`` (which audits the move), with the caller's principal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response

from warden.agents.policy import TIERS, Tier
from warden.console.web import PREFIX, AdminViewerDep, ViewerDep, console_router, nav_entry, render, services_of

router = console_router()
nav_entry("/agents", "Agents", order=30)
_RECENT_RUNS = 20


@router.get("/agents")
async def agents_page(request: Request, viewer: ViewerDep) -> Response:
    agents = await services_of(request).agents.list(viewer.principal.workspace_id)
    return render(request, "agents.html", viewer, title="Agents", agents=agents)


@router.get("/agents/{agent_ref}")
async def agent_page(request: Request, agent_ref: str, viewer: ViewerDep) -> Response:
    services = services_of(request)
    principal = viewer.principal
    agent = await services.agents.get(principal.workspace_id, agent_ref)
    maturity = await services.maturity.view(agent)
    feedback = await services.feedback.summary(principal, agent.id, recent=10)
    runs = await services.runs.list(principal, agent_id=agent.id, limit=_RECENT_RUNS)
    return render(request, "agent.html", viewer, title=agent.name, agent=agent, maturity=maturity,
                  feedback=feedback, runs=runs, tiers=TIERS)


@router.post("/agents/{agent_ref}/tier")
async def change_tier(request: Request, agent_ref: str, viewer: AdminViewerDep,
                      tier: Annotated[Tier, Form()],
                      reason: Annotated[str, Form(min_length=1, max_length=500)],
                      sticky: Annotated[bool, Form()] = False) -> Response:
    services = services_of(request)
    principal = viewer.principal
    agent = await services.agents.get(principal.workspace_id, agent_ref)
    await services.maturity.set_tier(principal.workspace_id, agent.id, tier, reason=reason.strip(),
                                     actor=principal.actor, sticky=sticky)
    return RedirectResponse(f"{PREFIX}/agents/{agent.id}", status_code=303)
