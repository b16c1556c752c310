"""One pure-ASGI middleware for what every request needs: a request id, a body
size limit, metrics and an access log. Pure ASGI (not BaseHTTPMiddleware) so
streams pass through untouched and the per-request cost stays in microseconds.

The access log is one JSON line a request (``warden.logs`` renders it): method,
route template, status, milliseconds and the request id; for a gateway call
also provider, model, attempts, tokens, cost and whether a fallback served it,
read from the ``CallContext`` the route left in the request's state
(``gateway_http.call_context``). A request no route matched carries its path,
redacted and cut to 200 characters, since it is the client's text.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.api.errors import error_reply
from warden.api.metrics import REQUEST_LATENCY, REQUESTS
from warden.errors import PayloadTooLarge, WardenError
from warden.gateway.context import CallContext
from warden.logs import redact, request_id_var

log = logging.getLogger("warden.access")
log_errors = logging.getLogger("warden.api")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_METRIC_KEYS_LIMIT = 1_000


class _BodyTooLarge(HTTPException):
    """An HTTPException so the framework re-raises it instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.access_log = access_log
        # (method, route, status) -> its metric children: ``labels()`` takes a lock and
        # validates its arguments on every call, the dict lookup does not.
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._templates: dict[Any, str | None] = {}  # plain Starlette endpoint -> its path template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _SANE_ID.match(candidate) else None
                break
        rid = rid or os.urandom(16).hex()  # 32 hex digits, like uuid4().hex, without the UUID object
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        scope["state"]["started"] = started
        status_holder = [0]  # 0 until the response starts
        rid_header = (b"x-request-id", rid.encode())

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            if scope["type"] == "http" and self._declared_too_large(scope):
                await self._reject_too_large(scope, receive, send_wrapped)
                return
            await self.app(scope, self._limited(receive), send_wrapped)
        except _BodyTooLarge:
            await self._reject_too_large(scope, receive, send_wrapped)
        except Exception as exc:
            # A bug: answered here, inside the request's context, so the reply and the
            # log line both carry the request id. The trace goes to the log only.
            log_errors.error("unhandled error", exc_info=exc)
            if scope["type"] != "http" or status_holder[0]:
                raise  # the response has started: nothing sane can be sent any more
            await error_reply(WardenError("internal server error"))(scope, receive, send_wrapped)
        finally:
            if scope["type"] == "http":
                self._observe(scope, status_holder[0] or 500, time.perf_counter() - started)
            request_id_var.reset(token)

    def _declared_too_large(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value) > self.max_body
                except ValueError:
                    return False
        return False

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        return wrapped

    async def _reject_too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = error_reply(PayloadTooLarge(f"request body exceeds {self.max_body} bytes"))
        await resp(scope, receive, send)

    def _template(self, scope: Scope) -> str | None:
        """The matched route's path template: FastAPI leaves its route in the scope, a
        plain Starlette route (the gateway's hot paths) only its endpoint."""
        path = getattr(scope.get("route"), "path", None)
        endpoint = scope.get("endpoint")
        if path is not None or endpoint is None:
            return path
        try:
            return self._templates[endpoint]
        except KeyError:
            found = next((getattr(r, "path", None) for r in getattr(scope.get("app"), "routes", ())
                          if getattr(r, "endpoint", None) is endpoint), None)
            if len(self._templates) < _METRIC_KEYS_LIMIT:
                self._templates[endpoint] = found
            return found

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        template = self._template(scope)
        path = template or "unmatched"
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"  # a client-chosen label value would grow the series forever
        key = (method, path, status)
        children = self._metrics.get(key)
        if children is None:
            if len(self._metrics) >= _METRIC_KEYS_LIMIT:  # odd methods must not grow it forever
                self._metrics.clear()
            children = self._metrics[key] = (REQUESTS.labels(method, path, str(status)),
                                             REQUEST_LATENCY.labels(method, path))
        children[0].inc()
        children[1].observe(elapsed)
        if self.access_log and log.isEnabledFor(logging.INFO):
            ms = round(elapsed * 1000, 1)
            fields: dict[str, Any] = {"method": method, "route": template, "status": status, "ms": ms,
                                      "request_id": scope["state"].get("request_id")}
            if template is None:
                fields["path"] = redact(scope.get("path", "")[:200])
            call = scope["state"].get("gateway_call")
            if isinstance(call, CallContext):
                fields.update(_gateway_fields(call))
            log.info("%s %s %d %.1fms", method, path, status, ms, extra={"access": fields})


def _gateway_fields(call: CallContext) -> dict[str, Any]:
    """What the access line says of a gateway call (model names may come from clients)."""
    info = call.served
    if info is None:  # no deployment answered: only how hard it tried
        return {"attempts": call.attempts}
    usage = info.usage
    fields = {"provider": info.provider, "model": redact(info.model), "attempts": info.attempts,
              "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
              "cost_usd": None if info.cost_usd is None else str(info.cost_usd)}
    if info.fallback:
        fields["fallback"] = True
        if info.cost_factor is not None:
            fields["fallback_cost_factor"] = round(info.cost_factor, 3)
    return fields
