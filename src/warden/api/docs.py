"""The API's own description: ``/openapi.json`` with the gateway routes in it, and
``/docs`` (Swagger UI) served from files shipped with Warden, so it works offline.

The two gateway routes are plain Starlette routes (the hot path skips FastAPI's
dependency solving), so FastAPI does not see them; their request bodies are the
pydantic models of ``formats/``, added to the schema here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from warden.api.chat import ChatBody, SessionCreate
from warden.api.governance import ApprovalDecision, PromotionDecision, TierChange
from warden.api.runs import CancelBody
from warden.formats.anthropic import CountTokensBody, MessagesBody
from warden.formats.openai import ChatCompletionBody
from warden.formats.openai_embeddings import EmbeddingsBody
from warden.formats.responses import ResponsesBody
from warden.governance.feedback import FeedbackBody
from warden.governance.policy_store import PolicyBody
from warden.api.decisions import DecideBody, OutcomeBody

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_PATH = "/docs/assets"

_ERROR = {"description": "An error, in the one envelope",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
_ENVELOPE = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["type", "code", "message"], "properties": {
        "type": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"},
        "param": {"type": "string"}, "request_id": {"type": "string"},
        "attempts": {"type": "integer", "description": "upstream attempts a failed gateway call made"}}}},
}
_GATEWAY: tuple[tuple[str, str, type[BaseModel], str], ...] = (
    ("/v1/chat/completions", "chat_completions", ChatCompletionBody,
     "OpenAI Chat Completions through Warden's router (JSON, or SSE with `stream: true`)."),
    ("/v1/messages", "messages", MessagesBody,
     "Anthropic Messages through Warden's router (JSON, or SSE with `stream: true`)."),
    ("/v1/messages/count_tokens", "count_tokens", CountTokensBody,
     "Input tokens of a Messages request: exact from an Anthropic deployment, else estimated."),
    ("/v1/responses", "create_response", ResponsesBody,
     "OpenAI Responses through Warden's router (JSON, or SSE with `stream: true`)."),
    ("/v1/embeddings", "create_embeddings", EmbeddingsBody,
     "OpenAI Embeddings through Warden's router (float or base64 vectors)."),
)


# Routes that read their body themselves (``parse_body``: 400 for bad JSON, 422
# naming the field, the same as the gateway), so FastAPI cannot see the model.
_READ_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/api/sessions", "post"): SessionCreate,
    ("/api/chat", "post"): ChatBody,
    ("/api/chat/stream", "post"): ChatBody,
    ("/api/governance/policy", "put"): PolicyBody,
    ("/api/approvals/{approval_id}", "post"): ApprovalDecision,
    ("/api/feedback", "post"): FeedbackBody,
    ("/api/agents/{agent_ref}/promotion", "post"): PromotionDecision,
    ("/api/agents/{agent_ref}/tier", "put"): TierChange,
    ("/api/governance/decide", "post"): DecideBody,
    ("/api/governance/actions/{action_id}/outcome", "post"): OutcomeBody,
}


# The same, with a body that may be left out.
_OPTIONAL_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/api/runs/{run_id}/cancel", "post"): CancelBody,
}


# Routes whose 200 is an event stream, not JSON.
_EVENT_STREAMS = ("/api/chat/stream", "/api/runs/{run_id}/events")


def _body_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        # One name, one shape: two formats' models of the same class name would otherwise
        # overwrite each other here, and one wire format would be documented with another's rules.
        if components.setdefault(name, sub) != sub:
            raise RuntimeError(f"two request models publish the schema name {name!r}: rename one")
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _gateway_paths(components: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, op_id, model, summary in _GATEWAY:
        paths[path] = {"post": {
            "tags": ["gateway"], "operationId": op_id, "summary": summary,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _body_schema(model, components)}}},
            "responses": {
                "200": {"description": "The completion, or its event stream",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "text/event-stream": {}}},
                "502": _ERROR,
            },
        }}
    return paths


# Every route may answer these, always in the one envelope (authentication, the
# body limit, validation, rate limits and an unreachable database apply everywhere).
_ANY_ROUTE_ERRORS = ("400", "401", "403", "404", "405", "409", "413", "422", "429", "500", "503")


def _document_errors(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    for code in _ANY_ROUTE_ERRORS:
        responses.setdefault(code, _ERROR)
    if "422" in responses and "HTTPValidationError" in str(responses["422"]):
        responses["422"] = _ERROR  # FastAPI's default shape is not what Warden sends


def install_docs(app: FastAPI) -> None:
    """Replace FastAPI's schema builder and its CDN-loading ``/docs`` (the app is
    created with ``docs_url=None``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ErrorEnvelope"] = _ENVELOPE
            schema["paths"] = {**_gateway_paths(components), **schema.get("paths", {})}
            # Imported here, not at start: its module brings the MCP SDK (~22 MB resident).
            from warden.agents.tools.mcp import McpServerConfig

            _READ_BODIES[("/api/mcp-servers", "post")] = McpServerConfig
            for (path, method), model in [*_READ_BODIES.items(), *_OPTIONAL_BODIES.items()]:
                schema["paths"][path][method]["requestBody"] = {
                    "required": (path, method) in _READ_BODIES,
                    "content": {"application/json": {"schema": _body_schema(model, components)}}}
            for path in _EVENT_STREAMS:
                schema["paths"][path]["get" if path.endswith("/events") else "post"]["responses"]["200"] = {
                    "description": "Server-Sent Events (``event:`` names the type, ``data:`` is JSON)",
                    "content": {"text/event-stream": {}}}
            for ops in schema["paths"].values():
                for op in ops.values():
                    _document_errors(op)
            app.openapi_schema = schema
        return app.openapi_schema

    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png")

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_route("/docs", docs, include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")
