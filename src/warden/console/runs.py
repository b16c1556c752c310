"""Sessions and runs: the runs a viewer may see (a member its own key's, an admin the
workspace's, as ``/api/runs``) and one run's timeline replayed from stored events
(``console/timeline.py``), with its model calls, tool calls, decisions, approvers
and errors. Authorization is ``Runs.get``'s: a run the viewer may not read is a 404.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import select
from starlette.responses import Response

from warden.console import timeline
from warden.console.web import ViewerDep, console_router, nav_entry, render, services_of
from warden.store.agent_models import RunEvent

router = console_router()
nav_entry("/runs", "Runs", order=35)
_LIST = 100
_EVENTS = 5000  # a page shows at most this many stored events of one run


@router.get("/runs")
async def runs_page(request: Request, viewer: ViewerDep) -> Response:
    services = services_of(request)
    runs = await services.runs.list(viewer.principal, limit=_LIST)
    agents = {a.id: a.name for a in await services.agents.list(viewer.principal.workspace_id)}
    return render(request, "runs.html", viewer, title="Runs", runs=runs, agents=agents)


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, viewer: ViewerDep) -> Response:
    services = services_of(request)
    run, calls = await services.runs.get(viewer.principal, run_id)  # 404 unless the viewer may read it
    approvals = await services.approvals.for_run(run.id)
    async with services.db.session() as s:
        rows = list((await s.execute(select(RunEvent).where(RunEvent.run_id == run.id)
                                     .order_by(RunEvent.seq).limit(_EVENTS))).scalars())
    agents = {a.id: a.name for a in await services.agents.list(viewer.principal.workspace_id)}
    return render(request, "run.html", viewer, title=f"Run {run.id}", run=run, agent_name=agents.get(run.agent_id),
                  events=timeline.event_entries(rows), model_calls=timeline.model_calls(run),
                  tool_calls=timeline.tool_calls(calls, approvals), run_error=timeline.mask_secrets(run.error or {}))
