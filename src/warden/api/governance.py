"""Governance over HTTP: the workspace policy, approvals, feedback, agent maturity
and tiers, and the audit log. Routes parse, authorize and call a service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from warden.api.deps import AdminDep, IsoDateTime, PrincipalDep, ServicesDep
from warden.errors import INT64_MAX
from warden.formats.common import parse_body
from warden.governance.approvals import ApprovalView
from warden.governance.feedback import FeedbackBody
from warden.agents.policy import Tier

router = APIRouter(tags=["governance"])


# --- policy ---------------------------------------------------------------------


@router.get("/api/governance/policy")
async def get_policy(principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return (await services.policies.get(principal.workspace_id)).view()


@router.put("/api/governance/policy")
async def put_policy(request: Request, principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    body = parse_body(_AnyObject, await request.body()).model_dump()
    return (await services.policies.put(principal.workspace_id, body, actor=principal.actor)).view()


class _AnyObject(BaseModel):
    """A JSON object; the policy store validates its fields (and names the bad one)."""

    model_config = ConfigDict(extra="allow")


# --- approvals ------------------------------------------------------------------


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    note: str | None = Field(default=None, max_length=2000)


@router.get("/api/approvals")
async def list_approvals(principal: PrincipalDep, services: ServicesDep,
                         status: Literal["pending", "approved", "rejected", "expired", "cancelled"] | None = None,
                         agent_id: str | None = Query(None, max_length=40),
                         run_id: str | None = Query(None, max_length=40),
                         limit: int = Query(50, ge=1, le=500)) -> list[ApprovalView]:
    return await services.approvals.list(principal, status=status, agent_id=agent_id, run_id=run_id, limit=limit)


@router.get("/api/approvals/{approval_id}")
async def get_approval(approval_id: str, principal: PrincipalDep, services: ServicesDep) -> ApprovalView:
    return await services.approvals.get(principal, approval_id)


@router.post("/api/approvals/{approval_id}")
async def decide_approval(approval_id: str, request: Request, principal: AdminDep,
                          services: ServicesDep) -> ApprovalView:
    body = parse_body(ApprovalDecision, await request.body())
    return await services.approvals.decide(principal, approval_id, body.decision, note=body.note)


# --- feedback ----------------------------------------------------------------------


@router.post("/api/feedback", status_code=201)
async def give_feedback(request: Request, response: Response, principal: PrincipalDep,
                        services: ServicesDep) -> dict[str, Any]:
    body = parse_body(FeedbackBody, await request.body())
    view, replaced = await services.feedback.submit(principal, body)
    if replaced:
        response.status_code = 200
    return {**view, "replaced": replaced}


@router.get("/api/agents/{agent_ref}/feedback")
async def agent_feedback(agent_ref: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return await services.feedback.summary(principal, agent_ref)


# --- maturity and tiers ----------------------------------------------------------------


class PromotionDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accept: StrictBool


class TierChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: Tier
    reason: str = Field(min_length=1, max_length=500)
    sticky: StrictBool = True  # false hands the agent back to automatic promotion and demotion


@router.get("/api/agents/{agent_ref}/maturity")
async def agent_maturity(agent_ref: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    agent = await services.agents.get(principal.workspace_id, agent_ref)
    return await services.maturity.view(agent)


@router.post("/api/agents/{agent_ref}/promotion")
async def decide_promotion(agent_ref: str, request: Request, principal: AdminDep,
                           services: ServicesDep) -> dict[str, Any]:
    body = parse_body(PromotionDecision, await request.body())
    agent = await services.agents.get(principal.workspace_id, agent_ref)
    return await services.maturity.decide_promotion(principal.workspace_id, agent.id, body.accept,
                                                    actor=principal.actor)


@router.put("/api/agents/{agent_ref}/tier")
async def set_tier(agent_ref: str, request: Request, principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    body = parse_body(TierChange, await request.body())
    agent = await services.agents.get(principal.workspace_id, agent_ref)
    return await services.maturity.set_tier(principal.workspace_id, agent.id, body.tier, reason=body.reason,
                                            actor=principal.actor, sticky=body.sticky)


# --- audit --------------------------------------------------------------------------


@router.get("/api/audit")
async def audit_events(principal: AdminDep, services: ServicesDep,
                       action: str | None = Query(None, max_length=64),
                       since: IsoDateTime | None = None, until: IsoDateTime | None = None,
                       limit: int = Query(100, ge=1, le=1000),
                       cursor: int | None = Query(None, ge=0, le=INT64_MAX)) -> dict[str, Any]:
    events, next_cursor = await services.audit_log.page(principal.workspace_id, action=action, since=since,
                                                        until=until, limit=limit, cursor=cursor)
    return {"events": events, "next_cursor": next_cursor}
