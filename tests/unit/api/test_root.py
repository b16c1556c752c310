"""``GET /``: a welcome page, or the console once one is mounted at ``/ui``."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from warden.api.root import root


async def _console(_request) -> PlainTextResponse:  # noqa: ANN001
    return PlainTextResponse("console")


async def _get(app: Starlette) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://warden.test") as c:
        return await c.get("/")


async def test_the_welcome_page_without_a_console() -> None:
    r = await _get(Starlette(routes=[Route("/", root)]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "warden chat -m auto" in r.text and "http://warden.test/v1" in r.text and "/docs" in r.text


async def test_a_redirect_to_the_console_when_there_is_one() -> None:
    r = await _get(Starlette(routes=[Route("/", root), Route("/ui", _console)]))
    assert r.status_code == 307 and r.headers["location"] == "/ui"
