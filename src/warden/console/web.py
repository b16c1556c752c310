"""What every console page shares: the route class (security headers, errors as
pages), the viewer dependencies (sign-in, CSRF, admin), rendering.

A console route is a FastAPI route on a router made by ``console_router()``. Its
handler takes ``viewer: ViewerDep`` (any signed-in key) or ``AdminViewerDep``; both
check the CSRF token on every unsafe method. Authorization is the services' own:
a page calls the service the JSON API calls, with ``viewer.principal``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from warden import __version__
from warden.console import PREFIX
from warden.console.sessions import ConsoleSessions, Viewer
from warden.errors import Forbidden, NotFound, Unauthorized, WardenError, field_path
from warden.services import Services

COOKIE = "warden_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}

templates = Jinja2Templates(directory=str(_HERE / "templates"))


@cache
def asset_version() -> str:
    """Changes whenever a static file does: ``?v=`` on our own assets, so they can be cached for a year."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


# The navigation bar: (order, path under /ui, label, admin only); each page module adds its entry.
_NAV: list[tuple[int, str, str, bool]] = []


def nav_entry(path: str, label: str, *, order: int, admin_only: bool = False) -> None:
    """List a page in the navigation bar (members never see an admin-only entry)."""
    if all(entry[1] != path for entry in _NAV):
        _NAV.append((order, path, label, admin_only))
        _NAV.sort()


def nav_items() -> list[tuple[str, str, bool]]:
    return [(path, label, admin_only) for _, path, label, admin_only in _NAV]


def usd(value: Any) -> str:
    """Money for people: cents when it is dollars, six decimals when it is less than a cent."""
    if value is None:
        return "unknown"
    amount = float(value)
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"


templates.env.filters["usd"] = usd
templates.env.globals.update(asset_version=asset_version, prefix=PREFIX, version=__version__,
                             nav_items=nav_items)


def services_of(request: Request) -> Services:
    return request.app.state.services


def sessions_of(request: Request) -> ConsoleSessions:
    """The console's session store, built on first use from the running services."""
    app_state = request.app.state
    sessions = getattr(app_state, "console_sessions", None)
    if sessions is None:
        services = services_of(request)
        sessions = app_state.console_sessions = ConsoleSessions(
            services.db, ttl_s=services.settings.console_session_ttl)
    return sessions


class SignInRequired(Unauthorized):
    """No (valid) session: pages send the browser to the sign-in form."""


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def current_viewer(request: Request) -> Viewer:
    viewer = await sessions_of(request).resolve(request.cookies.get(COOKIE))
    if viewer is None:
        raise SignInRequired("sign in to use the console", code="sign_in_required")
    request.state.principal = viewer.principal
    request.state.viewer = viewer
    if request.method not in _SAFE:
        await check_csrf(request, viewer.csrf_token)
    return viewer


async def check_csrf(request: Request, expected: str) -> None:
    """The token from the ``X-CSRF-Token`` header (htmx sends it from ``hx-headers``)
    or a form's ``csrf_token`` field must be the session's."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the form was stale or not sent by this console (CSRF token missing or wrong); "
                        "reload the page and try again", code="csrf_failed")


async def admin_viewer(viewer: Annotated[Viewer, Depends(current_viewer)]) -> Viewer:
    if not viewer.principal.is_admin:
        raise Forbidden("this page needs an admin key", code="admin_required")
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
AdminViewerDep = Annotated[Viewer, Depends(admin_viewer)]


def render(request: Request, template: str, viewer: Viewer | None = None, *, status: int = 200,
           **context: Any) -> Response:
    """A page (or an htmx fragment) with the layout's context: the viewer, its CSRF token, the nav."""
    viewer = viewer or getattr(request.state, "viewer", None)
    return templates.TemplateResponse(request, template, {"viewer": viewer, **context}, status_code=status)


def error_page(request: Request, error: WardenError) -> Response:
    return render(request, "error.html", status=error.status, error=error)


class ConsoleRoute(APIRoute):
    """Every console response carries the security headers; an error is a page with
    its status (a missing session: a redirect to sign in), never JSON or a trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await inner(request)
            except SignInRequired:
                response = _to_sign_in(request)
            except WardenError as e:
                response = error_page(request, e)
            except RequestValidationError as e:
                first = e.errors()[0]
                message = f"{field_path(first['loc'], 'form')}: {first['msg']}"
                response = error_page(request, WardenError(message, code="validation_error", status=422))
            response.headers.update(SECURITY_HEADERS)
            response.headers.setdefault("cache-control", "no-store")
            return response

        return handler


def _to_sign_in(request: Request) -> Response:
    target = f"{PREFIX}/login"
    if request.method == "GET" and request.url.path != target:
        target += f"?next={request.url.path}"
    if is_htmx(request):  # htmx follows this header with a full page load
        return Response(status_code=200, headers={"hx-redirect": target})
    if request.method in _SAFE:
        return RedirectResponse(target, status_code=303)
    return error_page(request, SignInRequired("your console session ended; sign in again",
                                              code="sign_in_required"))


def console_router() -> APIRouter:
    """A router for one console module: its routes render pages, stay out of the OpenAPI schema."""
    return APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


def fallback_router() -> APIRouter:
    """Last in line: any other path under /ui is a 404 page (with the headers), not the API's JSON."""
    router = console_router()

    @router.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    async def not_found(path: str) -> Response:
        raise NotFound(f"no console page at /ui/{path[:100]}", code="page_not_found")

    return router
