"""The gateway's POST endpoints, served past the framework's layers.

A model call is the one request a client makes thousands of times a minute, and
FastAPI wraps every request in seven ASGI layers before the router scans its
routes (server errors, telemetry, a body limit, the exception handlers, an exit
stack, the router, Starlette's request/response wrapper): about a tenth of a
gateway request's CPU. ``HotRoutes`` sits in front of that stack and hands a
``POST`` to one of these paths straight to its endpoint, inside Warden's own
request middleware (request id, body limit, metrics, access log, the 500 reply).

Nothing else changes: the endpoints stay registered on the app (the schema's
allowed methods, a ``GET`` answered 405), every other request takes the normal
stack, and errors leave through the same ``error_reply`` the app's handlers use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from warden.api.errors import error_reply
from warden.api.middleware import RequestContextMiddleware
from warden.errors import WardenError

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[str, Endpoint], *, max_body_bytes: int,
                 access_log: bool) -> None:
        self.app = app
        # The route objects give the access log and the metrics their path templates.
        self._routes = {path: Route(path, endpoint, methods=["POST"]) for path, endpoint in routes.items()}
        self._serve = RequestContextMiddleware(self._endpoint, max_body_bytes=max_body_bytes,
                                               access_log=access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self._routes.get(scope["path"])
            if route is not None:
                scope["route"] = route
                await self._serve(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await scope["route"].endpoint(request)
        except WardenError as exc:
            response = error_reply(exc)
        await response(scope, receive, send)
