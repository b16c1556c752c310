"""The console's admin pages over the real services: keys (a new key shown once, revoke),
provider credentials (add — the key never shown again —, test against the simulator,
remove), model groups, budgets, rate limits and the workspace policy (validation
messages inline); each through the service the JSON API uses, so audited the same,
and closed to members."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from tests.support.console import console_client

from warden.services import Services
from warden.store.models import ApiKey, AuditEvent, Credential
from warden.testing.upstream import UpstreamServer

SECRET = "sk-proj-CONSOLEtypedOnce0123456789abcd"
WRONG = "sk-proj-CONSOLEwrongKey9876543210zyxw"


async def _actions(services: Services) -> list[str]:
    async with services.db.session() as s:
        return [e.action for e in (await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()]


async def _member_key(services: Services) -> str:
    ws = await services.accounts.workspace_by_name("default")
    return (await services.accounts.create_key(ws.id, "m", "member")).key


async def test_a_created_key_is_shown_once_and_revoking_it_is_audited(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        created = await c.post("/ui/keys", data={"csrf_token": csrf, "name": "ci-bot", "role": "member",
                                                 "rpm_limit": "60"})
        new_key = re.search(r'<pre class="secret" id="new-key">([^<]+)</pre>', created.text).group(1)
        listing = await c.get("/ui/keys")
        works_for = (await services.accounts.authenticate(new_key)).key_id
        async with services.db.session() as s:
            row = (await s.execute(select(ApiKey).where(ApiKey.name == "ci-bot"))).scalar_one()
        revoked = await c.post(f"/ui/keys/{row.id}/revoke", data={"csrf_token": csrf})
        after = await c.get("/ui/keys")
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    assert new_key.startswith("wk-") and works_for == row.id
    assert new_key not in listing.text and "ci-bot" in listing.text and "60 rpm" in listing.text
    assert revoked.status_code == 303 and revoked.headers["location"] == "/ui/keys"
    assert f'data-key="{row.id}"' in after.text and "revoked" in after.text
    key_actions = [a for a in await _actions(services) if a.startswith("api_key.")]
    assert key_actions[-2:] == ["api_key.create", "api_key.revoke"] and key_actions.count("api_key.revoke") == 1


async def test_a_bad_key_form_shows_the_services_message_inline(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        bad_name = await c.post("/ui/keys", data={"csrf_token": csrf, "name": "no spaces!", "role": "member"})
        bad_limit = await c.post("/ui/keys", data={"csrf_token": csrf, "name": "ok", "rpm_limit": "lots"})
        no_csrf = await c.post("/ui/keys", data={"name": "sneaky"})
    assert bad_name.status_code == 422 and 'role="alert"' in bad_name.text and "name" in bad_name.text
    assert 'value="no spaces!"' in bad_name.text  # what was typed is kept
    assert bad_limit.status_code == 422 and "rpm_limit: a whole number" in bad_limit.text
    assert no_csrf.status_code == 403 and 'data-code="csrf_failed"' in no_csrf.text
    assert not any(k.name in ("ok", "sneaky") for k in await services.accounts.list_keys())


async def test_a_credential_is_added_tested_and_removed_and_its_key_never_shown(services: Services) -> None:
    async with UpstreamServer("openai", api_key=SECRET, models=["m1", "m2"]) as up, console_client(services) as (c, csrf):
        added = await c.post("/ui/credentials", data={
            "csrf_token": csrf, "provider": "openai-compatible", "api_key": SECRET, "label": "lab",
            "base_url": up.base_url, "models": "m1, m2"})
        wrong = await c.post("/ui/credentials", data={
            "csrf_token": csrf, "provider": "openai-compatible", "api_key": WRONG, "label": "wrong",
            "base_url": up.base_url})
        async with services.db.session() as s:
            ids = {r.label: r.id for r in (await s.execute(select(Credential))).scalars()}
        good = await c.post(f"/ui/credentials/{ids['lab']}/test", data={"csrf_token": csrf},
                            headers={"hx-request": "true"})
        bad = await c.post(f"/ui/credentials/{ids['wrong']}/test", data={"csrf_token": csrf})
        listing = await c.get("/ui/credentials")
        notice = await c.get(f"/ui/credentials?added={ids['lab']}")
        removed = await c.post(f"/ui/credentials/{ids['wrong']}/delete", data={"csrf_token": csrf})
        after = await c.get("/ui/credentials")
    assert added.status_code == 303 and added.headers["location"] == f"/ui/credentials?added={ids['lab']}"
    assert 'id="added"' in notice.text and "Credential openai-compatible/lab added (sk-…abcd)" in notice.text
    assert 'id="added"' not in listing.text
    assert "sk-…abcd" in listing.text
    for page in (wrong, good, bad, listing, after, notice):
        assert SECRET not in page.text and WRONG not in page.text and SECRET[8:-4] not in page.text
    assert 'data-status="ok"' in good.text and "Works" in good.text and "2 models" in good.text
    assert "<html" not in good.text  # an htmx fragment
    assert 'data-status="auth_failed"' in bad.text and "Failed" in bad.text
    assert removed.status_code == 303
    assert f'data-credential="{ids["wrong"]}"' not in after.text and f'data-credential="{ids["lab"]}"' in after.text
    actions = [a for a in await _actions(services) if a.startswith("byok.")]
    assert actions == ["byok.create", "byok.create", "byok.test", "byok.test", "byok.delete"]


async def test_a_credential_the_service_refuses_keeps_the_form_but_not_the_key(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        reply = await c.post("/ui/credentials", data={"csrf_token": csrf, "provider": "openai",
                                                      "api_key": "", "label": "lab"})
        unknown = await c.post("/ui/credentials", data={"csrf_token": csrf, "provider": "nope",
                                                        "api_key": SECRET})
    assert reply.status_code == 422 and "api_key: provider &#39;openai&#39; needs an API key" in reply.text
    assert 'value="lab"' in reply.text
    assert unknown.status_code == 422 and "unknown provider" in unknown.text and SECRET not in unknown.text
    async with services.db.session() as s:
        assert list((await s.execute(select(Credential))).scalars()) == []


async def test_groups_budgets_and_rate_limits_are_set_through_the_services(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        group = await c.post("/ui/limits/groups", data={"csrf_token": csrf, "name": "fast",
                                                        "members": "openai/gpt-4o-mini, anthropic/claude-3-5-haiku"})
        bad_group = await c.post("/ui/limits/groups", data={"csrf_token": csrf, "name": "dup",
                                                            "members": "nowhere/model-x"})
        budget = await c.post("/ui/limits/budgets", data={"csrf_token": csrf, "scope": "workspace",
                                                          "period": "month", "limit_usd": "25.50"})
        bad_budget = await c.post("/ui/limits/budgets", data={"csrf_token": csrf, "scope": "workspace",
                                                              "limit_usd": "-3"})
        rate = await c.post("/ui/limits/rate", data={"csrf_token": csrf, "rpm_limit": "120"})
        page = await c.get("/ui/limits")
    assert (group.status_code, budget.status_code, rate.status_code) == (303, 303, 303), rate.text[-600:]
    assert bad_group.status_code == 422 and 'role="alert"' in bad_group.text
    assert bad_budget.status_code == 422 and "limit_usd" in bad_budget.text
    assert "openai/gpt-4o-mini → anthropic/claude-3-5-haiku" in page.text
    assert "$25.50" in page.text and 'value="120"' in page.text
    ws = await services.accounts.workspace_by_name("default")
    assert (await services.budgets.rate_limits(ws.id)).rpm_limit == 120
    actions = await _actions(services)
    assert actions.count("model_group.put") == 1 and actions.count("budget.put") == 1
    assert actions.count("workspace.limits") == 1


async def test_the_policy_is_edited_as_json_with_errors_inline(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        page = await c.get("/ui/policy")
        not_json = await c.post("/ui/policy", data={"csrf_token": csrf, "policy": "{nope"})
        bad_field = await c.post("/ui/policy", data={"csrf_token": csrf, "policy": '{"auto_promote": "sometimes"}'})
        saved = await c.post("/ui/policy", data={"csrf_token": csrf, "policy": '{"auto_promote": false}'})
    assert page.status_code == 200 and "auto_promote" in page.text and "Version 0" in page.text
    assert not_json.status_code == 422 and "not JSON" in not_json.text and "{nope" in not_json.text
    assert bad_field.status_code == 422 and "auto_promote" in bad_field.text and 'role="alert"' in bad_field.text
    assert saved.status_code == 200 and "Saved as version 1" in saved.text
    ws = await services.accounts.workspace_by_name("default")
    assert (await services.policies.get(ws.id)).view()["auto_promote"] is False
    assert (await _actions(services)).count("governance.policy_update") == 1


@pytest.mark.parametrize("path", ["/ui/keys", "/ui/credentials", "/ui/limits", "/ui/policy", "/ui/requests", "/ui/audit"])
async def test_a_member_cannot_reach_an_admin_page(services: Services, path: str) -> None:
    async with console_client(services, await _member_key(services)) as (c, csrf):
        page = await c.get(path)
        nav = await c.get("/ui/runs")
        post = await c.post("/ui/keys", data={"csrf_token": csrf, "name": "x"})
    assert page.status_code == 403 and 'data-code="admin_required"' in page.text
    assert post.status_code == 403 and not any(k.name == "x" for k in await services.accounts.list_keys())
    assert nav.status_code == 200 and f'href="{path}"' not in nav.text


async def test_only_the_operator_changes_rate_limits(services: Services) -> None:
    ws = await services.accounts.create_workspace("acme", actor="test")
    other = await services.accounts.create_key(ws.id, "acme-admin", "admin")
    async with console_client(services, other.key) as (c, csrf):
        page = await c.get("/ui/limits")
        refused = await c.post("/ui/limits/rate", data={"csrf_token": csrf, "rpm_limit": "5"})
    assert "The operator (an admin of the default workspace) sets these." in page.text
    assert 'action="/ui/limits/rate"' not in page.text
    assert refused.status_code == 403 and 'data-code="admin_required"' in refused.text
    assert (await services.budgets.rate_limits(ws.id)).rpm_limit is None
