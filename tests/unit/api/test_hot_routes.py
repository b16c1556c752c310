"""HotRoutes: a POST to a gateway path reaches its endpoint past the framework's
layers, inside Warden's request middleware; anything else takes the app as before."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from warden.api.hot_routes import HotRoutes
from warden.errors import InvalidRequest


async def fine(request: Request) -> Response:
    return JSONResponse({"rid": request.state.request_id, "body": (await request.body()).decode()})


async def refuses(_: Request) -> Response:
    raise InvalidRequest("no such thing", code="bad_thing", param="x")


async def breaks(_: Request) -> Response:
    raise RuntimeError("sk-live-secret-in-a-trace")


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"inner": scope["path"]})(scope, receive, send)


def client(**kw: object) -> httpx.AsyncClient:
    app = HotRoutes(inner, {"/v1/fine": fine, "/v1/refuses": refuses, "/v1/breaks": breaks},
                    max_body_bytes=16, access_log=True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, **kw), base_url="http://t")


async def test_a_hot_post_is_served_inside_the_request_middleware(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="warden.access")
    async with client() as c:
        r = await c.post("/v1/fine", content=b"hello", headers={"x-request-id": "req-1"})
    assert r.status_code == 200
    assert r.json() == {"rid": "req-1", "body": "hello"}
    assert r.headers["x-request-id"] == "req-1"
    (record,) = [rec for rec in caplog.records if rec.name == "warden.access"]
    assert record.access["route"] == "/v1/fine" and record.access["status"] == 200  # type: ignore[attr-defined]


async def test_errors_leave_in_the_one_envelope() -> None:
    async with client() as c:
        refused = await c.post("/v1/refuses")
        broken = await c.post("/v1/breaks")
        too_big = await c.post("/v1/fine", content=b"x" * 17)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_thing" and refused.json()["error"]["param"] == "x"
    assert broken.status_code == 500 and broken.json()["error"]["message"] == "internal server error"
    assert "sk-live" not in broken.text
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"


async def test_everything_else_takes_the_app() -> None:
    async with client() as c:
        get = await c.get("/v1/fine")
        other = await c.post("/v1/other")
    async with client(root_path="/behind-a-prefix") as c:
        prefixed = await c.post("/v1/fine")
    assert get.json() == {"inner": "/v1/fine"}
    assert other.json() == {"inner": "/v1/other"}
    assert "inner" in prefixed.json()  # routing under a root path is the framework's
