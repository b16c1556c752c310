"""OpenAI Chat Completions edge: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The format itself (parsing, rendering, stream chunks) is ``warden.formats.openai``;
here are the routes. Non-stream replies carry the cost in the
``x-warden-cost-usd`` header too; streams only in their usage chunk.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from warden.api.deps import PrincipalDep, ServicesDep, authenticated
from warden.api.gateway_http import call_context, completed, streamed
from warden.formats.common import parse_body
from warden.formats.openai import (
    ChatCompletionBody,
    ChunkRenderer,
    render_completion,
    render_models,
    to_chat_request,
)

log = logging.getLogger("warden.api.openai")
router = APIRouter(prefix="/v1", tags=["openai"])


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``.

    A plain Starlette endpoint, not a FastAPI route: this is the hot path, and
    FastAPI's per-request dependency solving cost more than everything Warden
    does here. Same order as the dependencies had: authenticate, then parse.
    Errors propagate to the app's handlers (one envelope) as before."""
    services, principal = await authenticated(request)
    body = parse_body(ChatCompletionBody, await request.body())
    req = to_chat_request(body)
    ctx = call_context(request, principal, body.warden)
    if req.stream:
        stream = await services.gateway.open_stream(req, ctx)
        return streamed(stream, ChunkRenderer(stream.info, include_usage=body.include_usage,
                                              legacy_functions=body.legacy_functions,
                                              request_id=ctx.request_id), log)
    resp, info = await services.gateway.complete(req, ctx)
    return completed(render_completion(resp, info, legacy_functions=body.legacy_functions), info)


@router.get("/models")
async def list_models(principal: PrincipalDep, services: ServicesDep) -> Response:
    models = await services.gateway.list_models(principal.workspace_id)
    return Response(orjson.dumps(render_models(models)), media_type="application/json")
