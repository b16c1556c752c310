"""The console is built by the first request under /ui (tests/unit/test_serving_imports.py
checks that building the app leaves it unloaded): pages, static files, the 404 page and
``url_for`` work from then on, and the OpenAPI schema lists no console route, as before."""

from __future__ import annotations

import httpx
from warden.app import create_app
from warden.console.web import CSP
from warden.services import Services


def _client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://warden.test")


def _console_route(app: object) -> object:
    return next(r for r in app.routes if type(r).__name__ == "_LazyConsole")


async def test_the_first_console_request_builds_it(services: Services) -> None:
    app = create_app(services=services)
    lazy = _console_route(app)
    async with _client(app) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert lazy.router is None  # an API request leaves it unbuilt
        page = await c.get("/ui/login")
        assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
        built = lazy.router
        assert built is not None
        css = await c.get("/ui/static/console.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        missing = await c.get("/ui/no-such-page")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
        # As before the console was lazy: /ui gains its slash, then asks for a sign-in.
        assert (await c.get("/ui")).headers["location"] == "/ui/"
        assert (await c.get("/ui/")).headers["location"] == "/ui/login?next=/ui/"
        assert lazy.router is built  # built once
        assert (await c.get("/", follow_redirects=False)).headers["location"] == "/ui"
    assert app.url_path_for("console-static", path="console.css") == "/ui/static/console.css"


async def test_url_for_builds_it_too_and_openapi_lists_no_console_route(services: Services) -> None:
    app = create_app(services=services)
    assert app.url_path_for("console-static", path="console.js") == "/ui/static/console.js"
    assert _console_route(app).router is not None
    paths = app.openapi()["paths"]
    assert "/api/keys" in paths and not any(p.startswith("/ui") for p in paths)
