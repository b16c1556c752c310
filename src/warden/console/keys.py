"""Keys: the workspace's API keys (admin); create one (its secret is shown once, in
the reply to the form and nowhere else) and revoke one.

The same ``Accounts`` calls as ``/api/keys`` with the admin's principal, so the
same rules (name, limits, the bound agent) and the same audit events apply.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response

from warden.console.web import PREFIX, AdminViewerDep, console_router, nav_entry, render, services_of
from warden.errors import WardenError

router = console_router()
nav_entry("/keys", "Keys", order=40, admin_only=True)


async def _page(request: Request, viewer: AdminViewerDep, *, status: int = 200, **extra: object) -> Response:
    services = services_of(request)
    ws = viewer.principal.workspace_id
    keys = await services.accounts.list_keys(ws)
    agents = {a.id: a.name for a in await services.agents.list(ws)}
    return render(request, "keys.html", viewer, status=status, title="Keys", keys=keys, agents=agents, **extra)


@router.get("/keys")
async def keys_page(request: Request, viewer: AdminViewerDep) -> Response:
    return await _page(request, viewer)


def _limit(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise WardenError(f"{name}: a whole number, or empty for none", code="validation_error", status=422)
    return int(value)


@router.post("/keys")
async def create_key(request: Request, viewer: AdminViewerDep,
                     name: Annotated[str, Form(max_length=64)],
                     role: Annotated[Literal["admin", "member"], Form()] = "member",
                     rpm_limit: Annotated[str, Form(max_length=12)] = "",
                     tpm_limit: Annotated[str, Form(max_length=12)] = "",
                     agent: Annotated[str, Form(max_length=64)] = "") -> Response:
    principal = viewer.principal
    try:
        created = await services_of(request).accounts.create_key(
            principal.workspace_id, name.strip(), role, actor=principal.actor,
            rpm_limit=_limit(rpm_limit, "rpm_limit"), tpm_limit=_limit(tpm_limit, "tpm_limit"),
            agent=agent.strip() or None)
    except WardenError as e:  # shown next to the form, what was typed kept
        return await _page(request, viewer, status=e.status, error=e,
                           form={"name": name, "role": role, "rpm_limit": rpm_limit, "tpm_limit": tpm_limit,
                                 "agent": agent})
    # The one time the secret is shown: this reply only (no-store), never a redirect or the session.
    return await _page(request, viewer, status=201, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, viewer: AdminViewerDep) -> Response:
    principal = viewer.principal
    await services_of(request).accounts.revoke_key(key_id, workspace_id=principal.workspace_id,
                                                   actor=principal.actor)
    return RedirectResponse(f"{PREFIX}/keys", status_code=303)
