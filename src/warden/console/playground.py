"""The chat playground: send a message to a chosen agent and watch its reply stream.

The turn goes through ``Runs.start`` with the viewer's principal, as ``/api/chat/stream``
does (the same agent lookup, budgets and governance; the run is the viewer's). The
browser side is ``static/playground.js`` (the CSP forbids inline script): it posts
the form to ``/ui/playground/stream`` and appends the SSE text deltas. Without
script the form posts to ``/ui/playground`` and the reply comes back in the page.
Leaving a stream before its turn ends abandons the run, as the API's owner stream does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Form, Request
from starlette.responses import Response, StreamingResponse

from warden.agents.events import STOPS_STREAM
from warden.agents.runs import MAX_MESSAGE_CHARS, stream_turn
from warden.console.web import ViewerDep, console_router, nav_entry, render, services_of
from warden.errors import WardenError
from warden.formats.sse import frame

router = console_router()
nav_entry("/playground", "Playground", order=38)

Message = Annotated[str, Form(min_length=1, max_length=MAX_MESSAGE_CHARS)]
AgentRef = Annotated[str, Form(max_length=80)]


async def _page(request: Request, viewer: ViewerDep, *, status: int = 200, **extra: Any) -> Response:
    agents = await services_of(request).agents.list(viewer.principal.workspace_id)
    return render(request, "playground.html", viewer, status=status, title="Playground", agents=agents, **extra)


@router.get("/playground")
async def playground(request: Request, viewer: ViewerDep) -> Response:
    return await _page(request, viewer)


@router.post("/playground")
async def send(request: Request, viewer: ViewerDep, message: Message, agent: AgentRef = "",
               session_id: Annotated[str, Form(max_length=80)] = "") -> Response:
    """Without script: the whole turn, then the page with the reply."""
    services = services_of(request)
    try:
        handle = await services.runs.start(viewer.principal, message, agent_ref=agent or None,
                                           session_id=session_id or None)
        outcome = await services.runs.wait(handle)
    except WardenError as e:
        return await _page(request, viewer, status=e.status, error=e, chosen=agent, message=message)
    return await _page(request, viewer, outcome=outcome, chosen=agent, session_id=outcome.session_id)


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError


@router.post("/playground/stream")
async def stream(request: Request, viewer: ViewerDep, message: Message, agent: AgentRef = "",
                 session_id: Annotated[str, Form(max_length=80)] = "") -> Response:
    services = services_of(request)
    handle = await services.runs.start(viewer.principal, message, agent_ref=agent or None,
                                       session_id=session_id or None)

    async def frames() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event in stream_turn(handle):
                yield frame(event, event=event["type"], id=event["seq"], default=_json)
                finished = event["type"] in STOPS_STREAM
        finally:
            if not finished:  # the browser left mid-turn: the run is not carried on for nobody
                await services.runs.abandon(handle.run_id)

    return StreamingResponse(frames(), media_type="text/event-stream", headers={
        "x-accel-buffering": "no", "x-warden-run-id": handle.run_id, "x-warden-session-id": handle.session_id})
