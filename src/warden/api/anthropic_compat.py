"""Anthropic Messages edge: ``POST /v1/messages``.

The format itself (parsing, rendering, stream events, the error body) is
``warden.formats.anthropic``; here is the route. Non-stream replies carry the
cost in the ``x-warden-cost-usd`` header too.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from warden.api.deps import authenticated
from warden.api.gateway_http import call_context, completed, streamed
from warden.errors import WardenError
from warden.formats.anthropic import (
    EventRenderer,
    MessagesBody,
    error_body,
    render_message,
    to_chat_request,
)
from warden.formats.common import parse_body
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


async def _messages(request: Request) -> Response:
    services, principal = await authenticated(request)
    body = parse_body(MessagesBody, await request.body())
    req = to_chat_request(body)
    ctx = call_context(request, principal, body.warden)
    if req.stream:
        stream = await services.gateway.open_stream(req, ctx)
        return streamed(stream, EventRenderer(stream.info, request_id=ctx.request_id), log)
    resp, info = await services.gateway.complete(req, ctx)
    return completed(render_message(resp, info), info)
