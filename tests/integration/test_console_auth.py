"""The console's sign-in rules over HTTP (the real ASGI app): cookie flags, CSRF on
every unsafe method, the CSP on every page, sessions that expire, end at sign-out
and end when their key is revoked, and members kept to what the API lets them do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from tests.support.app import ADMIN_KEY, client_for
from tests.support.console import console_client, csrf_in, sign_in

from warden.console.web import CSP
from warden.services import Services
from warden.store.console_models import ConsoleSession
from warden.store.base import utcnow
from warden.store.models import AuditEvent


async def _workspace_id(services: Services) -> str:
    return (await services.accounts.workspace_by_name("default")).id


async def _agent(services: Services, name: str) -> str:
    async with client_for(services) as admin:
        reply = await admin.post("/api/agents", json={"name": name, "instructions": "x"})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


async def test_sign_in_sets_a_strict_http_only_cookie_and_stores_only_its_hash(services: Services) -> None:
    async with client_for(services, key=None) as c:
        form = await c.get("/ui/login")
        assert form.status_code == 200 and form.headers["content-security-policy"] == CSP
        reply = await c.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": csrf_in(form.text),
                                                "next": "/ui/agents"})
        assert reply.status_code == 303 and reply.headers["location"] == "/ui/agents"
        cookie = next(h for h in reply.headers.get_list("set-cookie") if h.startswith("warden_session="))
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert "secure" not in flags  # plain HTTP here; Secure when the request came over TLS
        token = cookie.split(";")[0].split("=", 1)[1]
        page = await c.get("/ui/agents")
    assert page.status_code == 200 and "default" in page.text
    assert ADMIN_KEY not in page.text and token not in page.text
    async with services.db.session() as s:
        rows = list((await s.execute(select(ConsoleSession))).scalars())
        events = [e.action for e in (await s.execute(select(AuditEvent))).scalars()]
    assert len(rows) == 1 and rows[0].id != token and len(rows[0].id) == 64
    assert "console.sign_in" in events


async def test_secure_flag_over_tls(services: Services) -> None:
    async with client_for(services, key=None) as c:
        c.base_url = "https://warden.test"
        form = await c.get("/ui/login")
        reply = await c.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": csrf_in(form.text)})
    cookie = next(h for h in reply.headers.get_list("set-cookie") if h.startswith("warden_session="))
    assert "secure" in [p.strip().lower() for p in cookie.split(";")]


async def test_a_wrong_key_is_refused_on_the_form_and_nothing_is_stored(services: Services) -> None:
    async with client_for(services, key=None) as c:
        form = await c.get("/ui/login")
        reply = await c.post("/ui/login", data={"api_key": "wk-not-a-real-key-000000000000",
                                                "csrf_token": csrf_in(form.text)})
    assert reply.status_code == 401 and "not a valid Warden API key" in reply.text
    assert "warden_session" not in reply.headers.get("set-cookie", "")
    async with services.db.session() as s:
        assert list((await s.execute(select(ConsoleSession))).scalars()) == []


async def test_sign_in_form_needs_its_csrf_token(services: Services) -> None:
    async with client_for(services, key=None) as c:
        await c.get("/ui/login")
        reply = await c.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": "forged"})
    assert reply.status_code == 403 and 'data-code="csrf_failed"' in reply.text
    assert "warden_session" not in reply.headers.get("set-cookie", "")


@pytest.mark.parametrize("next_", ["//evil.example/x", "https://evil.example/", "/api/keys", "/ui\\..\\x"])
async def test_sign_in_never_redirects_off_the_console(services: Services, next_: str) -> None:
    async with client_for(services, key=None) as c:
        form = await c.get("/ui/login")
        reply = await c.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": csrf_in(form.text),
                                                "next": next_})
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/"


async def test_unsafe_requests_without_the_csrf_token_are_refused(services: Services) -> None:
    ws = await _workspace_id(services)
    agent_id = await _agent(services, "tiered")
    async with console_client(services) as (c, csrf):
        missing = await c.post(f"/ui/agents/{agent_id}/tier", data={"tier": "intern", "reason": "r"})
        wrong = await c.post(f"/ui/agents/{agent_id}/tier", data={"tier": "intern", "reason": "r",
                                                                  "csrf_token": csrf[:-2] + "xx"})
        header = await c.post(f"/ui/agents/{agent_id}/tier", data={"tier": "intern", "reason": "by header"},
                              headers={"x-csrf-token": csrf})
    for reply in (missing, wrong):
        assert reply.status_code == 403 and 'data-code="csrf_failed"' in reply.text
        assert reply.headers["content-security-policy"] == CSP
    assert header.status_code == 303
    assert (await services.agents.get(ws, agent_id)).tier == "intern"


async def test_every_console_response_has_the_csp_and_no_store(services: Services) -> None:
    async with console_client(services) as (c, _):
        for path in ("/ui/", "/ui/approvals", "/ui/agents", "/ui/approvals/list", "/ui/nope", "/ui/agents/nope"):
            reply = await c.get(path)
            assert reply.headers.get("content-security-policy") == CSP, path
            assert reply.headers["x-frame-options"] == "DENY"
            if path.startswith("/ui/agents/"):
                assert reply.status_code == 404 and "Not found" in reply.text
        static = await c.get("/ui/static/vendor/htmx-2.0.11.min.js")
    assert static.status_code == 200 and "immutable" in static.headers["cache-control"]
    assert "<script>" not in (await _page(services, "/ui/")) and 'style="' not in (await _page(services, "/ui/"))


async def _page(services: Services, path: str) -> str:
    async with console_client(services) as (c, _):
        return (await c.get(path)).text


async def test_signed_out_pages_redirect_to_sign_in_and_htmx_gets_a_redirect_header(services: Services) -> None:
    async with client_for(services, key=None) as c:
        page = await c.get("/ui/approvals")
        fragment = await c.get("/ui/approvals/list", headers={"hx-request": "true"})
        post = await c.post("/ui/logout")
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/approvals"
    assert fragment.headers["hx-redirect"].startswith("/ui/login")
    assert post.status_code == 401


async def test_sign_out_ends_the_session_for_whoever_holds_the_cookie(services: Services) -> None:
    async with console_client(services) as (c, csrf):
        stolen = dict(c.cookies)
        out = await c.post("/ui/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
    async with client_for(services, key=None) as thief:
        thief.cookies.update(stolen)
        reply = await thief.get("/ui/")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


async def test_an_expired_session_sends_back_to_sign_in_and_is_forgotten_a_day_later(services: Services) -> None:
    async with console_client(services) as (c, _):
        async with services.db.transaction() as s:
            await s.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        reply = await c.get("/ui/")
        assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")
        async with services.db.transaction() as s:
            await s.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(days=2)))
        await sign_in(c, ADMIN_KEY)  # a sign-in prunes the rows of sessions long ended
    async with services.db.session() as s:
        assert len(list((await s.execute(select(ConsoleSession))).scalars())) == 1


async def test_revoking_the_key_ends_its_console_sessions_at_the_next_click(any_services: Services) -> None:
    services = any_services
    ws = await _workspace_id(services)
    created = await services.accounts.create_key(ws, "reviewer", "admin")
    async with console_client(services, created.key) as (c, _):
        assert (await c.get("/ui/agents")).status_code == 200
        async with client_for(services) as admin:
            revoked = await admin.delete(f"/api/keys/{created.id}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        reply = await c.get("/ui/agents")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


async def test_a_member_cannot_reach_admin_pages_or_actions(services: Services) -> None:
    ws = await _workspace_id(services)
    member = await services.accounts.create_key(ws, "member", "member")
    agent_id = await _agent(services, "guarded")
    async with console_client(services, member.key) as (c, csrf):
        overview = await c.get("/ui/")
        data = await c.get("/ui/data/requests")
        tier = await c.post(f"/ui/agents/{agent_id}/tier", data={"tier": "autonomous", "reason": "me",
                                                                 "csrf_token": csrf})
        agent_page = await c.get(f"/ui/agents/{agent_id}")
    assert overview.status_code == 200 and "for admin keys" in overview.text and "chart-requests" not in overview.text
    assert data.status_code == 403 and 'data-code="admin_required"' in data.text
    assert tier.status_code == 403 and "needs an admin key" in tier.text
    assert agent_page.status_code == 200 and "Change tier" not in agent_page.text
    assert (await services.agents.get(ws, agent_id)).tier == "student"


async def test_sign_in_helper_signs_in_a_second_client_independently(services: Services) -> None:
    async with client_for(services, key=None) as a, client_for(services, key=None) as b:
        ta, tb = await sign_in(a, ADMIN_KEY), await sign_in(b, ADMIN_KEY)
    assert ta != tb  # one CSRF token per session
