"""The ASGI application: wires routes, middleware and services. No logic here."""

from __future__ import annotations

import ctypes
import gc
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from warden import __version__
from warden.api import agents as agents_api
from warden.api import (
    anthropic_compat,
    embeddings,
    health,
    keys,
    model_aliases,
    model_groups,
    openai_compat,
    responses_compat,
    route,
    usage,
    workspaces,
)
from warden.api import budgets as budgets_api
from warden.api import byok as byok_api
from warden.api import chat as chat_api
from warden.api import chat_ws
from warden.api import runs as runs_api
from warden.api import governance as governance_api
from warden.api import decisions as decisions_api
from warden.api import webhooks as webhooks_api
from warden.api.docs import install_docs
from warden.api.errors import install_error_handlers
from warden.api.hot_routes import HotRoutes
from warden.api.metrics import metrics_endpoint
from warden.api import mcp_servers as mcp_servers_api
from warden.api.root import root as root_page
from warden.api.middleware import RequestContextMiddleware
from warden.console import install_console
from warden.config import Settings, load_settings
from warden.services import Services

# FastAPI >= 0.160 checks for OpenTelemetry providers on every request (environment
# lookups); Warden exports Prometheus metrics instead, so that check is switched off.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def create_app(settings: Settings | None = None, *, services: Services | None = None,
               after_start: Callable[[], None] | None = None, run_migrations: bool = True) -> FastAPI:
    settings = settings or (services.settings if services else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or await Services.start(settings, run_migrations=run_migrations)
        if after_start is not None:
            after_start()
        try:
            yield
        finally:
            await mcp_endpoint.close()
            if owned:
                await app.state.services.close()

    app = _WardenApp(title="Warden", version=__version__, lifespan=lifespan,
                     docs_url=None, redoc_url=None, **_NO_NATIVE_TELEMETRY)
    app.hot_routes = {  # the gateway: plain Starlette endpoints, served past the framework
        "/v1/chat/completions": openai_compat.chat_completions,
        "/v1/messages": anthropic_compat.messages,
        "/v1/messages/count_tokens": anthropic_compat.count_tokens,
        "/v1/responses": responses_compat.create_response,
        "/v1/embeddings": embeddings.embeddings,
    }
    app.hot_settings = {"max_body_bytes": settings.max_body_bytes, "access_log": settings.access_log}
    if services is not None:
        app.state.services = services  # tests and embedders may skip the lifespan
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, **app.hot_settings)  # the same for both paths
    # Registered too (a GET is answered 405 with the allowed methods), though HotRoutes
    # serves their POSTs before the framework sees them.
    for path, endpoint in app.hot_routes.items():
        app.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(workspaces.router)
    app.include_router(openai_compat.router)
    app.include_router(anthropic_compat.router)
    app.include_router(responses_compat.router)
    app.include_router(byok_api.router)
    app.include_router(model_groups.router)
    app.include_router(model_aliases.router)
    app.include_router(route.router)
    app.include_router(usage.router)
    app.include_router(budgets_api.router)
    app.include_router(budgets_api.limits_router)
    app.include_router(agents_api.router)
    app.include_router(chat_api.router)
    app.include_router(chat_ws.router)
    app.include_router(runs_api.router)
    app.include_router(governance_api.router)
    app.include_router(decisions_api.router)
    app.include_router(mcp_servers_api.router)
    app.include_router(webhooks_api.router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    mcp_endpoint = _LazyMcpEndpoint()  # the MCP gateway (api/mcp.py): raw ASGI, streamable HTTP
    app.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    if settings.console:
        install_console(app)
    app.add_route("/", root_page, methods=["GET"], include_in_schema=False)
    install_docs(app)
    return app


class _WardenApp(FastAPI):
    """FastAPI with the gateway's POST routes in front of its middleware stack
    (api/hot_routes.py says why)."""

    hot_routes: dict[str, Any]
    hot_settings: dict[str, Any]

    def build_middleware_stack(self) -> Any:
        return HotRoutes(super().build_middleware_stack(), self.hot_routes, **self.hot_settings)


class _LazyMcpEndpoint:
    """``/mcp``, built by its first request: ``api/mcp.py`` brings the MCP SDK
    (~22 MB resident, ~0.4 s of start-up), which a process that never serves MCP
    should not pay for."""

    def __init__(self) -> None:
        self.endpoint: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.endpoint is None:
            from warden.api.mcp import McpEndpoint

            self.endpoint = McpEndpoint()
        await self.endpoint(scope, receive, send)

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()


def tune_process() -> None:
    """Once the services are up. A server process allocates many short-lived objects
    per request: collect the youngest generation less often, and move what exists
    after start-up (modules, services, the catalog) out of the collector's sight, so
    collections stay short."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    _release_free_heap()


def _release_free_heap() -> None:
    """Start-up (imports, the catalog, the migration check) leaves freed blocks in
    the C heap; glibc returns them to the system only on request."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl, macOS): nothing to trim
        pass

