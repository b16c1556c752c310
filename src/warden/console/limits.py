"""Routing and limits (admin): the workspace's model groups, its budgets with live
spend, its rate limits; and the workspace policy as JSON, edited with the store's
validation message shown inline.

Each form calls the service its ``/api`` route calls (``ModelGroups``, ``Budgets``,
``PolicyStore``) with the admin's principal, so the same checks and audit events
apply. Rate limits are the operator's (``RootAdminDep`` in the API): only an admin
of the default workspace may change them; other admins see them.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response

from warden.console.web import PREFIX, AdminViewerDep, console_router, nav_entry, render, services_of
from warden.errors import Forbidden, ValidationFailed, WardenError
from warden.gateway.limits import PERIODS
from warden.tenancy.accounts import DEFAULT_WORKSPACE, Principal
from warden.tenancy.budgets import BudgetSpec, RateLimitsSpec
from warden.errors import parse_input

router = console_router()
nav_entry("/limits", "Limits", order=50, admin_only=True)
nav_entry("/policy", "Policy", order=55, admin_only=True)


def _is_operator(principal: Principal) -> bool:
    return principal.workspace_name == DEFAULT_WORKSPACE


async def _page(request: Request, viewer: AdminViewerDep, *, status: int = 200, **extra: Any) -> Response:
    services = services_of(request)
    ws = viewer.principal.workspace_id
    return render(request, "limits.html", viewer, status=status, title="Limits",
                  groups=await services.model_groups.list(ws),
                  budgets=await services.budgets.status(ws, services.state),
                  rate_limits=await services.budgets.rate_limits(ws),
                  operator=_is_operator(viewer.principal), periods=PERIODS, **extra)


@router.get("/limits")
async def limits_page(request: Request, viewer: AdminViewerDep) -> Response:
    return await _page(request, viewer)


async def _or_inline(request: Request, viewer: AdminViewerDep, section: str, action: Any) -> Response:
    """Run a change; its error is shown in the form's section, the page otherwise reloaded."""
    try:
        await action
    except WardenError as e:
        return await _page(request, viewer, status=e.status, error=e, error_section=section)
    return RedirectResponse(f"{PREFIX}/limits", status_code=303)


@router.post("/limits/groups")
async def put_group(request: Request, viewer: AdminViewerDep, name: Annotated[str, Form(max_length=64)],
                    members: Annotated[str, Form(max_length=8192)]) -> Response:
    ids = [m.strip() for m in members.replace("\n", ",").split(",") if m.strip()]
    p = viewer.principal
    return await _or_inline(request, viewer, "groups", services_of(request).model_groups.put(
        p.workspace_id, name.strip(), ids, actor=p.actor))


@router.post("/limits/groups/{name}/delete")
async def delete_group(request: Request, name: str, viewer: AdminViewerDep) -> Response:
    p = viewer.principal
    return await _or_inline(request, viewer, "groups", services_of(request).model_groups.delete(
        p.workspace_id, name, actor=p.actor))


@router.post("/limits/budgets")
async def put_budget(request: Request, viewer: AdminViewerDep, scope: Annotated[str, Form(max_length=16)],
                     limit_usd: Annotated[str, Form(max_length=40)], period: Annotated[str, Form(max_length=16)] = "month",
                     scope_id: Annotated[str, Form(max_length=64)] = "",
                     per_request_cap_usd: Annotated[str, Form(max_length=40)] = "") -> Response:
    p = viewer.principal
    services = services_of(request)

    async def put() -> None:
        spec = parse_input(BudgetSpec, {"scope": scope, "scope_id": scope_id.strip() or None, "period": period,
                                        "limit_usd": limit_usd.strip(),
                                        "per_request_cap_usd": per_request_cap_usd.strip() or None})
        await services.budgets.put(p.workspace_id, spec, actor=p.actor)

    return await _or_inline(request, viewer, "budgets", put())


@router.post("/limits/budgets/{budget_id}/delete")
async def delete_budget(request: Request, budget_id: str, viewer: AdminViewerDep) -> Response:
    p = viewer.principal
    return await _or_inline(request, viewer, "budgets", services_of(request).budgets.delete(
        p.workspace_id, budget_id, actor=p.actor))


def _optional_number(value: str) -> int | float | str | None:
    """A form's text as the JSON number the API would get; anything else left for the model to refuse."""
    value = value.strip()
    if not value:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@router.post("/limits/rate")
async def put_rate_limits(request: Request, viewer: AdminViewerDep, rpm_limit: Annotated[str, Form(max_length=12)] = "",
                          tpm_limit: Annotated[str, Form(max_length=12)] = "",
                          max_fallback_cost_factor: Annotated[str, Form(max_length=24)] = "") -> Response:
    p = viewer.principal
    if not _is_operator(p):
        raise Forbidden("this action needs an admin key of the default workspace", code="admin_required")
    services = services_of(request)

    async def put() -> None:
        spec = parse_input(RateLimitsSpec, {"rpm_limit": _optional_number(rpm_limit),
                                            "tpm_limit": _optional_number(tpm_limit),
                                            "max_fallback_cost_factor": _optional_number(max_fallback_cost_factor)})
        await services.budgets.set_rate_limits(p.workspace_id, spec, actor=p.actor)

    return await _or_inline(request, viewer, "rate", put())


# --- policy -------------------------------------------------------------------------


def _policy_text(view: dict[str, Any]) -> str:
    editable = {k: v for k, v in view.items() if k not in ("version", "updated_at", "updated_by")}
    return orjson.dumps(editable, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


@router.get("/policy")
async def policy_page(request: Request, viewer: AdminViewerDep) -> Response:
    view = (await services_of(request).policies.get(viewer.principal.workspace_id)).view()
    return render(request, "policy.html", viewer, title="Policy", policy=view, text=_policy_text(view))


@router.post("/policy")
async def put_policy(request: Request, viewer: AdminViewerDep,
                     policy: Annotated[str, Form(max_length=200_000)]) -> Response:
    p = viewer.principal
    services = services_of(request)
    try:
        try:
            data = orjson.loads(policy)
        except orjson.JSONDecodeError as e:
            raise ValidationFailed(f"not JSON: {e}", param="policy") from None
        if not isinstance(data, dict):
            raise ValidationFailed("the policy is a JSON object ({...})", param="policy")
        stored = await services.policies.put(p.workspace_id, data, actor=p.actor)
    except WardenError as e:  # the typed text stays, with the store's message above it
        current = (await services.policies.get(p.workspace_id)).view()
        return render(request, "policy.html", viewer, status=e.status, title="Policy", policy=current,
                      text=policy, error=e)
    return render(request, "policy.html", viewer, title="Policy", policy=stored.view(),
                  text=_policy_text(stored.view()), saved=True)
