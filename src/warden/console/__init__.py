"""The web console at ``/ui``: server-rendered pages (Jinja2) over the same services
as the JSON API, htmx for partial updates, SSE for live ones, uPlot for charts.

Everything is served by this process: templates in ``templates/``, static files
(vendored htmx, its SSE extension and uPlot, with their licences in
``static/vendor/VERSIONS.md``) in ``static/``. No Node build, nothing fetched at
run time. ``install_console(app)`` adds it to the application: one route for every
path under ``/ui`` that builds the console on its first request (the page modules
and Jinja2 are ~2.3 MB resident and ~0.3 CPU-s of start-up a gateway that never
serves a page should not pay). Console routes stay out of the OpenAPI schema anyway.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRouter
from starlette.routing import BaseRoute, Match, get_route_path
from starlette.types import Receive, Scope, Send

PREFIX = "/ui"


def install_console(app: FastAPI) -> None:
    app.state.console = PREFIX  # GET / leads here (api/root.py)
    app.router.routes.append(_LazyConsole(app))


def build_console(app: FastAPI) -> APIRouter:
    """The console's routes, as ``app.include_router`` would add them."""
    from warden.console import agents, approvals, audit, credentials, keys, limits, login, overview
    from warden.console import playground, requests, runs
    from warden.console.static_files import CachedStaticFiles
    from warden.console.web import STATIC_DIR, fallback_router

    router = APIRouter(dependency_overrides_provider=app)
    router.mount(f"{PREFIX}/static", CachedStaticFiles(directory=str(STATIC_DIR)),
                 name="console-static")
    for module in (login, overview, approvals, agents, runs, playground, keys, credentials, limits,
                   requests, audit):
        router.include_router(module.router)
    router.include_router(fallback_router())  # last: an unknown /ui/ path is a 404 page
    return router


class _LazyConsole(BaseRoute):
    """Every path under ``/ui``; the console's router is built by the first of them."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.router: APIRouter | None = None

    def _built(self) -> APIRouter:
        if self.router is None:  # no await before the assignment: built once
            self.router = build_console(self.app)
        return self.router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = get_route_path(scope)  # http or websocket: the router handles lifespan itself
        inside = path == PREFIX or path.startswith(f"{PREFIX}/")
        return (Match.FULL, {}) if inside else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._built()(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        return self._built().url_path_for(name, **path_params)
