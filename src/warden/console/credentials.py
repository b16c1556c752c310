"""Credentials: the workspace's provider keys (BYOK, admin): add one (the key is typed
once and never shown again: lists show its masked form), test it against the
provider (``tenancy/probe.py``), remove it.

The same ``Byok`` calls as ``/api/byok`` with the admin's principal: the same
validation (its message shown next to the form), egress policy and audit events.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from starlette.responses import RedirectResponse, Response

from warden.console.web import PREFIX, AdminViewerDep, console_router, is_htmx, nav_entry, render, services_of
from warden.errors import WardenError
from warden.gateway.providers.registry import PROVIDERS

router = console_router()
nav_entry("/credentials", "Credentials", order=45, admin_only=True)


async def _page(request: Request, viewer: AdminViewerDep, *, status: int = 200, added_id: str = "",
                **extra: Any) -> Response:
    credentials = await services_of(request).byok.list(viewer.principal.workspace_id)
    added = next((c for c in credentials if c.id == added_id), None) if added_id else None
    return render(request, "credentials.html", viewer, status=status, title="Credentials", added=added,
                  credentials=credentials, providers=sorted(PROVIDERS.values(), key=lambda p: p.id), **extra)


@router.get("/credentials")
async def credentials_page(request: Request, viewer: AdminViewerDep,
                           added: str = Query("", max_length=40)) -> Response:
    return await _page(request, viewer, added_id=added)


def _spec(provider: str, api_key: str, label: str, base_url: str, models: str) -> dict[str, Any]:
    """The form as ``/api/byok``'s body: empty fields left out, models one id per comma."""
    spec: dict[str, Any] = {"provider": provider.strip()}
    if api_key.strip():
        spec["api_key"] = api_key.strip()
    if label.strip():
        spec["label"] = label.strip()
    if base_url.strip():
        spec["base_url"] = base_url.strip()
    ids = [m.strip() for m in models.split(",") if m.strip()]
    if ids:
        spec["models"] = [{"id": m} for m in ids]
    return spec


@router.post("/credentials")
async def add_credential(request: Request, viewer: AdminViewerDep,
                         provider: Annotated[str, Form(max_length=40)],
                         api_key: Annotated[str, Form(max_length=8192)] = "",
                         label: Annotated[str, Form(max_length=200)] = "",
                         base_url: Annotated[str, Form(max_length=2048)] = "",
                         models: Annotated[str, Form(max_length=8192)] = "") -> Response:
    principal = viewer.principal
    try:
        view = await services_of(request).byok.create(
            principal.workspace_id, _spec(provider, api_key, label, base_url, models), actor=principal.actor)
    except WardenError as e:
        # Re-shown with what was typed, except the key: it is never sent back to the browser.
        return await _page(request, viewer, status=e.status, error=e,
                           form={"provider": provider, "label": label, "base_url": base_url, "models": models})
    # Post/redirect/get: a reload must not send the key again. The id names no secret.
    return RedirectResponse(f"{PREFIX}/credentials?added={view.id}", status_code=303)


@router.post("/credentials/{cred_id}/test")
async def test_credential(request: Request, cred_id: str, viewer: AdminViewerDep) -> Response:
    principal = viewer.principal
    result = await services_of(request).byok.test(principal.workspace_id, cred_id, actor=principal.actor)
    if is_htmx(request):
        return render(request, "_credential_test.html", viewer, result=result, cred_id=cred_id)
    return await _page(request, viewer, tested=result, tested_id=cred_id)


@router.post("/credentials/{cred_id}/delete")
async def remove_credential(request: Request, cred_id: str, viewer: AdminViewerDep) -> Response:
    principal = viewer.principal
    await services_of(request).byok.delete(principal.workspace_id, cred_id, actor=principal.actor)
    return RedirectResponse(f"{PREFIX}/credentials", status_code=303)
