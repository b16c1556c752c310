"""``/api/byok``: the workspace's provider keys (admin); ``/api/providers``: the known providers.

Secrets travel only in JSON bodies: a query string that looks like it carries
one is refused before anything else happens, so it is not processed (and a
client learns to stop putting keys in URLs, which end up in proxy logs).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from warden.api.deps import AdminDep, PrincipalDep, ServicesDep
from warden.tenancy.credentials import CredentialCreate, CredentialPatch, CredentialView
from warden.tenancy.probe import TestResult
from warden.errors import InvalidRequest
from warden.gateway.providers.registry import PROVIDERS
from warden.logs import redact

_SECRET_PARAM_WORDS = ("key", "token", "secret", "password", "auth", "credential")


async def refuse_secrets_in_query(request: Request) -> None:
    for name, value in request.query_params.multi_items():
        lowered = name.lower()
        if any(word in lowered for word in _SECRET_PARAM_WORDS) or redact(value) != value:
            raise InvalidRequest(
                f"query parameter '{name[:40]}' looks like a secret: send secrets only in the "
                "JSON body (and treat this one as exposed)",
                code="secret_in_query", param=name[:40],
            )


router = APIRouter(prefix="/api", tags=["byok"], dependencies=[Depends(refuse_secrets_in_query)])


class ProviderView(BaseModel):
    id: str
    name: str
    wire: str
    base_url: str | None
    auth: str
    env: list[str]
    key_required: bool
    local: bool


@router.get("/providers", response_model=list[ProviderView])
async def list_providers(_: PrincipalDep) -> list[ProviderView]:
    return [ProviderView(id=p.id, name=p.name, wire=p.wire, base_url=p.base_url, auth=p.auth,
                         env=list(p.env), key_required=p.key_required, local=p.local)
            for p in PROVIDERS.values()]


@router.post("/byok", status_code=201, response_model=CredentialView)
async def create_credential(body: CredentialCreate, principal: AdminDep,
                            services: ServicesDep) -> CredentialView:
    return await services.byok.create(principal.workspace_id, body, actor=principal.actor)


@router.get("/byok", response_model=list[CredentialView])
async def list_credentials(principal: AdminDep, services: ServicesDep) -> list[CredentialView]:
    return await services.byok.list(principal.workspace_id)


@router.get("/byok/{cred_id}", response_model=CredentialView)
async def get_credential(cred_id: str, principal: AdminDep, services: ServicesDep) -> CredentialView:
    return await services.byok.get(principal.workspace_id, cred_id)


@router.patch("/byok/{cred_id}", response_model=CredentialView)
async def update_credential(cred_id: str, body: CredentialPatch, principal: AdminDep,
                            services: ServicesDep) -> CredentialView:
    return await services.byok.update(principal.workspace_id, cred_id, body, actor=principal.actor)


@router.delete("/byok/{cred_id}", response_model=CredentialView)
async def delete_credential(cred_id: str, principal: AdminDep,
                            services: ServicesDep) -> CredentialView:
    return await services.byok.delete(principal.workspace_id, cred_id, actor=principal.actor)


@router.post("/byok/{cred_id}/test", response_model=TestResult)
async def test_credential(cred_id: str, principal: AdminDep, services: ServicesDep) -> TestResult:
    return await services.byok.test(principal.workspace_id, cred_id, actor=principal.actor)
