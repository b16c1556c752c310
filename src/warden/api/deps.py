"""Request dependencies: the running services and the caller's principal; and the
query-parameter types routes share."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BeforeValidator

from warden.tenancy.accounts import DEFAULT_WORKSPACE, Principal, bearer_token
from warden.errors import Forbidden
from warden.services import Services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
    # a thread hop (and queue lock) on every request.
    return request.app.state.services


def request_key(request: Request) -> str | None:
    """The API key of a request: ``Authorization: Bearer``, else ``x-api-key`` (Anthropic SDKs)."""
    return bearer_token(request.headers.get("authorization")) or request.headers.get("x-api-key")


async def get_principal(request: Request) -> Principal:
    return (await authenticated(request))[1]


async def authenticated(request: Request) -> tuple[Services, Principal]:
    """The services and the caller, for plain Starlette endpoints (the hot gateway
    routes) that skip FastAPI's dependency solving."""
    services: Services = request.app.state.services
    principal = await services.accounts.authenticate(request_key(request))
    request.state.principal = principal
    return services, principal


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this action needs an admin key", code="admin_required")
    return principal


async def require_default_admin(principal: Annotated[Principal, Depends(require_admin)]) -> Principal:
    if principal.workspace_name != DEFAULT_WORKSPACE:
        raise Forbidden("this action needs an admin key of the default workspace", code="admin_required")
    return principal


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
RootAdminDep = Annotated[Principal, Depends(require_default_admin)]


def _iso_8601(value: Any) -> Any:
    # pydantic would read "0.5" as a Unix time; the schema promises ISO 8601 only.
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-12-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]
