"""OpenAI Chat Completions edge: ``POST /v1/chat/completions``, and ``GET /v1/models``
and ``GET /v1/models/{id}`` for every client: OpenAI's shape, or Anthropic's when the
client sends ``anthropic-version`` (Claude Code's gateway model discovery). The list
holds ``auto``, the workspace's groups, its exact aliases and its deployments.

The format itself (parsing, rendering, stream chunks) is ``warden.formats.openai``;
here are the routes. Non-stream replies carry the cost in the
``x-warden-cost-usd`` header too; streams only in their usage chunk.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from warden.api.deps import PrincipalDep, ServicesDep, authenticated
from warden.api.gateway_http import call_context, completed, streamed
from warden.formats.common import parse_body
from warden.errors import NotFound
from warden.formats import anthropic as anthropic_format
from warden.formats.openai import (
    ChatCompletionBody,
    ChunkRenderer,
    render_completion,
    render_model,
    render_models,
    to_chat_request,
)
from warden.services import Services

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


async def _models(services: Services, workspace_id: str) -> list[dict[str, Any]]:
    models = await services.gateway.list_models(workspace_id)
    aliases = [{"id": a.pattern, "owned_by": "warden", "kind": "alias", "target": a.target}
               for a in await services.model_aliases.list(workspace_id) if "*" not in a.pattern]
    return models[:1] + aliases + models[1:]


@router.get("/models")
async def list_models(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    models = await _models(services, principal.workspace_id)
    anthropic = "anthropic-version" in request.headers
    body = anthropic_format.render_models(models) if anthropic else render_models(models)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: PrincipalDep,
                    services: ServicesDep) -> Response:
    """One model by id; a name a wildcard alias serves is found too."""
    models = await _models(services, principal.workspace_id)
    model = next((m for m in models if m["id"] == model_id), None)
    if model is None:
        target = await services.model_aliases.resolve(principal.workspace_id, model_id)
        if target is None:
            raise NotFound(f"model '{model_id}' is not listed by this workspace", code="model_not_found",
                           param="model")
        model = {"id": model_id, "owned_by": "warden", "kind": "alias", "target": target}
    anthropic = "anthropic-version" in request.headers
    body = anthropic_format.render_model(model) if anthropic else render_model(model)
    return Response(orjson.dumps(body), media_type="application/json")
