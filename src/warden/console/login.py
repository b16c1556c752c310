"""Sign-in with a Warden API key, sign-out.

The sign-in form has no session yet, so its CSRF token is a double-submit one: a
random value in a short-lived SameSite=Strict cookie that the form must repeat.
The key is checked by ``Accounts.authenticate``, the API's own check, and is never
stored or echoed: the browser keeps only the session cookie.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response

from warden.console.web import (
    COOKIE,
    PREFIX,
    ViewerDep,
    console_router,
    render,
    services_of,
    sessions_of,
)
from warden.errors import Forbidden, Unauthorized

router = console_router()
_LOGIN_CSRF = "warden_login_csrf"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    # Only a path of this console: never another host (``//evil``) or scheme.
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


def _form(request: Request, *, next_: str | None, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, status=status, login_csrf=token,
                      next=_safe_next(next_), error=error)
    response.set_cookie(_LOGIN_CSRF, token, max_age=3600, path=f"{PREFIX}/login", httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return _form(request, next_=next)


@router.post("/login")
async def login(request: Request, api_key: Annotated[str, Form(max_length=200)],
                csrf_token: Annotated[str, Form(max_length=100)] = "",
                next: Annotated[str, Form(max_length=500)] = "") -> Response:  # noqa: A002
    expected = request.cookies.get(_LOGIN_CSRF, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise Forbidden("the sign-in form was stale (CSRF token missing or wrong); reload and try again",
                        code="csrf_failed")
    try:
        principal = await services_of(request).accounts.authenticate(api_key.strip())
    except Unauthorized:
        return _form(request, next_=next, error="That key is not a valid Warden API key (or it was revoked).",
                     status=401)
    token, _ = await sessions_of(request).open(principal)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, max_age=int(sessions_of(request).ttl.total_seconds()), path=PREFIX,
                        httponly=True, samesite="strict", secure=_secure(request))
    response.delete_cookie(_LOGIN_CSRF, path=f"{PREFIX}/login")
    return response


@router.post("/logout")
async def logout(request: Request, viewer: ViewerDep) -> Response:
    await sessions_of(request).close(viewer)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))
    return response
