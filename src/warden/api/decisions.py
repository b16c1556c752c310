"""The decision point over HTTP (issue 17): an external agent (or the ``warden hook``
commands on its behalf) asks before it runs one of its own tools, then reports how
it went. Every answer is 200 with ``decision`` allow / deny / pending: a refusal is
an answer, not an error. A ``pending`` call was not run; poll
``GET /api/governance/actions/{id}`` and, once its approval says ``approved``, send
the very same call to ``decide`` again: that call is allowed, exactly once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from warden.api.deps import PrincipalDep, ServicesDep
from warden.formats.common import parse_body
from warden.governance.gate import GovernedCall, Source

router = APIRouter(tags=["governance"])


class DecideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1, max_length=128)
    arguments: Any = None
    level: StrictInt | None = Field(default=None, ge=1, le=4)
    agent: str | None = Field(default=None, max_length=128)  # an admin key not bound to an agent names one
    hold_s: float | None = Field(default=None, ge=0, le=3600)  # None: WARDEN_APPROVAL_HOLD
    source: Source = "api"


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: StrictBool
    result: Any = None


@router.post("/api/governance/decide")
async def decide_call(request: Request, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    body = parse_body(DecideBody, await request.body())
    gate = services.gate
    agent = await gate.agent_for(principal, body.agent)
    v = await gate.decide(principal, agent, GovernedCall(body.tool, body.arguments, body.level, body.source),
                          # The server's hold time is the most a caller may ask for.
                          hold_s=None if body.hold_s is None else min(body.hold_s, gate.hold_s))
    out: dict[str, Any] = {"decision": v.outcome, "reason": v.reason, "rule": v.rule, "level": v.level,
                           "action_id": v.action_id, "agent_id": agent.id}
    if v.approval_id is not None:
        out["approval_id"] = v.approval_id
    if v.note is not None:
        out["note"] = v.note
    if v.decided_by is not None:
        out["decided_by"] = v.decided_by
    return out


@router.post("/api/governance/actions/{action_id}/outcome")
async def report_outcome(action_id: str, request: Request, principal: PrincipalDep,
                         services: ServicesDep) -> dict[str, Any]:
    body = parse_body(OutcomeBody, await request.body())
    await services.gate.finished(principal, action_id, ok=body.ok, result=body.result)
    return await services.gate.action(principal, action_id)


@router.get("/api/governance/actions/{action_id}")
async def get_action(action_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return await services.gate.action(principal, action_id)
