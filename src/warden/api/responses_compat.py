"""OpenAI Responses API edge: ``POST /v1/responses``, and the stored responses'
``GET`` / ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``.

The format itself (parsing, rendering, the event stream) is
``warden.formats.responses`` and ``warden.formats.responses_stream``; the
stored responses are ``warden.tenancy.responses``. A request goes through the
same gateway call as Chat Completions (routing, limits, budgets, failover,
metering). With ``store`` (the default, as OpenAI has it) a finished response is
kept before its reply (or its stream's last event) leaves, so a follow-up naming
it in ``previous_response_id`` always finds it; failed ones are not kept. When
keeping fails (the database is down) the paid-for answer is still delivered and
the failure logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from warden.api.deps import PrincipalDep, ServicesDep, authenticated
from warden.api.gateway_http import GatewayStreamResponse, call_context, completed, warden_headers
from warden.formats.common import parse_body, render_stream
from warden.formats.responses import ResponsesBody, render_response, to_responses_call
from warden.formats.responses_stream import ResponseEventRenderer
from warden.services import Services

log = logging.getLogger("warden.api.responses")
router = APIRouter(prefix="/v1/responses", tags=["openai"])


async def create_response(request: Request) -> Response:
    """``POST /v1/responses``: a plain Starlette endpoint, like ``/v1/chat/completions``
    (the hot path skips FastAPI's dependency solving)."""
    services, principal = await authenticated(request)
    body = parse_body(ResponsesBody, await request.body())
    workspace = principal.workspace_id
    history = (await services.responses.conversation(workspace, body.previous_response_id)
               if body.previous_response_id else [])
    call = to_responses_call(body, history)
    ctx = call_context(request, principal, body.warden)
    if call.chat.stream:
        stream = await services.gateway.open_stream(call.chat, ctx)
        renderer = ResponseEventRenderer(call, stream.info)
        frames = _storing(render_stream(stream, renderer, log), renderer, services, workspace, history)
        return GatewayStreamResponse(frames, stream, warden_headers(stream.info, with_cost=False))
    resp, info = await services.gateway.complete(call.chat, ctx)
    payload = render_response(call, resp, info)
    if body.store:
        await _keep(services, workspace, payload, history, call.input_items)
    return completed(payload, info)


async def _keep(services: Services, workspace: str, payload: dict[str, Any], history: list[dict[str, Any]],
                input_items: list[dict[str, Any]]) -> None:
    try:
        await services.responses.save(workspace, payload, history=history, input_items=input_items)
    except Exception:  # the answer is complete and paid for: deliver it, and log why it is not kept
        log.exception("could not store response %s", payload["id"])


async def _storing(frames: AsyncIterator[bytes], renderer: ResponseEventRenderer, services: Services,
                   workspace: str, history: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The stream's frames; with ``store``, the finished response is saved before its
    last event (``response.completed``) is written."""
    saved = not renderer.call.body.store
    async for frame in frames:
        if not saved and renderer.final is not None:
            saved = True
            await _keep(services, workspace, renderer.final, history, renderer.call.input_items)
        yield frame


@router.get("/{response_id}")
async def get_response(response_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """A stored response of this workspace (404 when unknown, expired or another workspace's)."""
    return await services.responses.get(principal.workspace_id, response_id)


@router.delete("/{response_id}")
async def delete_response(response_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    await services.responses.delete(principal.workspace_id, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str, principal: PrincipalDep, services: ServicesDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The items a stored response was made from (the conversation before it, and its input)."""
    items, more = await services.responses.input_items(principal.workspace_id, response_id,
                                                       after=after, limit=limit, order=order)
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": more}

