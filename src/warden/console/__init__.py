"""The web console at ``/ui``: server-rendered pages (Jinja2) over the same services
as the JSON API, htmx for partial updates, SSE for live ones, uPlot for charts.

Everything is served by this process: templates in ``templates/``, static files
(vendored htmx, its SSE extension and uPlot, with their licences in
``static/vendor/VERSIONS.md``) in ``static/``. No Node build, nothing fetched at
run time. ``install_console(app)`` adds it to the application.
"""

from __future__ import annotations

from fastapi import FastAPI

from warden.console import agents, approvals, login, overview
from warden.console import audit, credentials, keys, limits, playground, requests, runs
from warden.console.static_files import CachedStaticFiles
from warden.console.web import PREFIX, STATIC_DIR, fallback_router

PAGE_MODULES = (login, overview, approvals, agents, runs, playground, keys, credentials, limits, requests, audit)


def install_console(app: FastAPI) -> None:
    app.state.console = PREFIX  # GET / leads here (api/root.py)
    app.mount(f"{PREFIX}/static", CachedStaticFiles(directory=str(STATIC_DIR)), name="console-static")
    for module in PAGE_MODULES:
        app.include_router(module.router)
    app.include_router(fallback_router())  # last: an unknown /ui/ path is a 404 page
