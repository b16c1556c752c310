"""Every error on every route leaves in one envelope, with the right status."""

from __future__ import annotations

import logging
import re

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from warden.errors import InvalidRequest, ValidationFailed, WardenError, field_path
from warden.logs import request_id_var

log = logging.getLogger("warden.api")

_HTTP_CODES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def error_reply(error: WardenError) -> Response:
    """The one HTTP error reply: the error's envelope, status and headers."""
    return Response(orjson.dumps(error.envelope(request_id_var.get())), status_code=error.status,
                    media_type="application/json", headers=error.headers or None)


def _framework_error(status: int, type_: str, code: str, message: str, *,
                     param: str | None = None, headers: dict[str, str] | None = None) -> WardenError:
    """An error the framework raised (routing, parsing), as a WardenError like any other."""
    error = WardenError(message, code=code, status=status, param=param, headers=headers)
    error.type = type_
    return error


async def _warden_error(_: Request, exc: WardenError) -> Response:
    return error_reply(exc)


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    field = field_path(loc[1:] if loc[:1] in (("body",), ("query",), ("path",), ("header",)) else loc)
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return error_reply(InvalidRequest("request body is not valid JSON", code="invalid_json"))
    return error_reply(ValidationFailed(f"{field}: {msg}", param=field))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    type_, code = _HTTP_CODES.get(exc.status_code, ("server_error", "http_error"))
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["allow"] = _allowed_methods(request) or exc.headers.get("Allow", "")
    return error_reply(_framework_error(exc.status_code, type_, code, detail, headers=headers or None))


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette names only those of the
    first route whose path matched, and one path may have a route per method; the
    schema knows them all (it holds the gateway routes too)."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = request.app.state.allowed_methods = [
            (re.compile("^" + re.sub(r"\\{[^/}]+\\}", "[^/]+", re.escape(path)) + "$"),
             {m.upper() for m in ops})
            for path, ops in request.app.openapi().get("paths", {}).items()]
    return ", ".join(sorted(set().union(*(ms for rx, ms in table if rx.match(request.url.path)))))


async def _unexpected(_: Request, exc: Exception) -> Response:
    # The trace goes to the log (redacted), never to the client.
    log.error("unhandled error", exc_info=exc)
    return error_reply(WardenError("internal server error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WardenError, _warden_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
