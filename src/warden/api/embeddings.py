"""OpenAI Embeddings edge: ``POST /v1/embeddings``.

The format is ``warden.formats.openai_embeddings``; the call is the gateway's
(:meth:`Gateway.embed`: routing, budgets, rate limits, failover and metering as
for chat). A plain Starlette endpoint, like chat completions, for the same
reason: it is a hot path. The reply carries the ``x-warden-*`` headers, cost
included.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from warden.api.deps import authenticated
from warden.api.gateway_http import call_context, completed
from warden.formats.common import parse_body
from warden.formats.openai_embeddings import EmbeddingsBody, render_embeddings, to_embedding_request


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: authenticate, parse, embed, render."""
    services, principal = await authenticated(request)
    body = parse_body(EmbeddingsBody, await request.body())
    ctx = call_context(request, principal, body.warden)
    resp, info = await services.gateway.embed(to_embedding_request(body), ctx)
    return completed(render_embeddings(resp, info, body.encoding_format), info)
