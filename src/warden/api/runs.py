"""Runs over HTTP for operators: the list (who holds each run, and why one looks
stuck) and cancelling one. Reading one run and following its events are in
``api/chat.py``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from warden.agents.runs import RunSummary
from warden.agents.runs.control import summary
from warden.api.deps import AdminDep, PrincipalDep, ServicesDep
from warden.formats.common import parse_body

router = APIRouter(tags=["chat"])


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


@router.get("/api/runs")
async def list_runs(principal: PrincipalDep, services: ServicesDep,
                    status: Literal["running", "paused", "completed", "failed", "cancelled"] | None = None,
                    stuck: bool = False,
                    agent: str | None = Query(None, max_length=80, description="An agent's id or name."),
                    limit: int = Query(50, ge=1, le=500)) -> list[RunSummary]:
    """The workspace's runs, newest first (a member sees its own key's). ``stuck=true``:
    only active runs nobody carries on, each with its ``stuck_reason``."""
    agent_id = None if agent is None else (await services.agents.get(principal.workspace_id, agent)).id
    return await services.runs.list(principal, status=status, stuck=stuck, agent_id=agent_id, limit=limit)


@router.post("/api/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request, principal: AdminDep, services: ServicesDep) -> RunSummary:
    """Cancel a running or paused run: its waiting approvals close, its session is free."""
    raw = await request.body()
    body = parse_body(CancelBody, raw) if raw.strip() else CancelBody()
    return summary(await services.runs.cancel_run(principal, run_id, body.reason))
