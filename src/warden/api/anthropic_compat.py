"""Anthropic Messages edge: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

The format itself (parsing, rendering, stream events, the error body) is
``warden.formats.anthropic`` (with ``anthropic_stream`` and ``anthropic_native``);
here are the routes. Non-stream replies carry the cost in the
``x-warden-cost-usd`` header too; a request served by another format names what
it could not honour in ``x-warden-dropped-fields`` / ``x-warden-dropped-betas``.
``count_tokens`` is exact from an Anthropic deployment (``x-warden-token-count:
exact``), else Warden's estimate (``estimate``); it is not billed.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from warden.api.deps import authenticated
from warden.api.gateway_http import call_context, completed, streamed
from warden.errors import WardenError
from warden.formats.anthropic import CountTokensBody, MessagesBody, error_body, render_message, to_chat_request
from warden.formats.anthropic_native import dropped_headers
from warden.formats.anthropic_stream import EventRenderer
from warden.formats.common import parse_body
from warden.gateway.complexity import estimate_tokens
from warden.gateway.providers.registry import PROVIDERS
from warden.logs import request_id_var

log = logging.getLogger("warden.api.anthropic")
router = APIRouter(prefix="/v1", tags=["anthropic"])


def anthropic_error_response(error: WardenError) -> Response:
    # The request context always has an id (the middleware sets it), so the envelope carries it.
    return Response(orjson.dumps(error_body(error, request_id_var.get())), status_code=error.status,
                    media_type="application/json", headers=error.headers or None)


async def messages(request: Request) -> Response:
    """``POST /v1/messages``: a plain Starlette endpoint (the hot path; see
    ``openai_compat.chat_completions``). Every WardenError, auth and validation
    included, leaves in Anthropic's shape."""
    try:
        return await _messages(request)
    except WardenError as exc:
        return anthropic_error_response(exc)


def _wire(provider: str) -> str | None:
    info = PROVIDERS.get(provider)
    return None if info is None else info.wire


async def _messages(request: Request) -> Response:
    services, principal = await authenticated(request)
    body = parse_body(MessagesBody, await request.body())
    req = to_chat_request(body, request.headers)
    ctx = call_context(request, principal, body.warden)
    if req.stream:
        stream = await services.gateway.open_stream(req, ctx)
        renderer = EventRenderer(stream.info, request_id=ctx.request_id, input_estimate=estimate_tokens(req))
        response: Response = streamed(stream, renderer, log)
    else:
        resp, info = await services.gateway.complete(req, ctx)
        response = completed(render_message(resp, info), info)
    provider = response.headers.get("x-warden-provider", "")
    response.headers.update(dropped_headers(req.native, _wire(provider)))
    return response


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``."""
    try:
        services, principal = await authenticated(request)
        body = parse_body(CountTokensBody, await request.body())
        req = to_chat_request(body, request.headers)
        ctx = call_context(request, principal, body.warden)
        count, exact, dep = await services.gateway.count_tokens(req, ctx)
    except WardenError as exc:
        return anthropic_error_response(exc)
    return Response(orjson.dumps({"input_tokens": count}), media_type="application/json", headers={
        "x-warden-token-count": "exact" if exact else "estimate",
        "x-warden-provider": dep.provider, "x-warden-model": dep.model,
    })
