"""Request dependencies: the running services and the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from warden.accounts import DEFAULT_WORKSPACE, Principal
from warden.errors import Forbidden, Unauthorized
from warden.services import Services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
    # a thread hop (and queue lock) on every request.
    return request.app.state.services


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
        raise Unauthorized("Authorization header must be 'Bearer <key>'")
    # Anthropic SDKs send the key as x-api-key.
    return request.headers.get("x-api-key")


async def get_principal(request: Request) -> Principal:
    return (await authenticated(request))[1]


async def authenticated(request: Request) -> tuple[Services, Principal]:
    """The services and the caller, for plain Starlette endpoints (the hot gateway
    routes) that skip FastAPI's dependency solving."""
    services: Services = request.app.state.services
    principal = await services.accounts.authenticate(bearer_token(request))
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
