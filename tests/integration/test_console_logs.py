"""The console's request log and audit pages over the real services: gateway requests
listed from the spend ledger with filters and paging, one request's routing
explanation (what the ledger keeps, and what it does not), the audit chain with
filters, its verification (the operator's) and its JSONL export."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import update
from tests.support.agents import MODEL, connect_provider
from tests.support.app import client_for
from tests.support.console import console_client

from warden.services import Services
from warden.store.models import AuditEvent, SpendRow
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _requests(services: Services, up: UpstreamServer, n: int, *, fail: int = 0) -> None:
    await connect_provider(services, up)
    up.enqueue(*[Behaviour(status=400) for _ in range(fail)])
    async with client_for(services) as c:
        for i in range(n + fail):
            await c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]},
                         headers={"x-request-id": f"req-{i}"})
    await services.spend.flush()


async def test_the_request_log_lists_filters_and_pages(services: Services, up: UpstreamServer) -> None:
    await _requests(services, up, 3, fail=1)
    async with console_client(services) as (c, _):
        everything = await c.get("/ui/requests")
        errors = await c.get("/ui/requests", params={"status": "error"})
        by_model = await c.get("/ui/requests", params={"model": f"openai/{MODEL}", "status": "ok"})
        nothing = await c.get("/ui/requests", params={"model": "other-model"})
        future = await c.get("/ui/requests", params={"since": "2999-01-01T00:00"})
        bad_time = await c.get("/ui/requests", params={"since": "yesterday"})
    assert everything.status_code == 200 and everything.text.count("data-request=") == 4
    assert MODEL in everything.text and "$0.0000" in everything.text  # a priced request: cost in dollars
    assert errors.text.count("data-request=") == 1 and 'class="badge bad"' in errors.text
    assert by_model.text.count("data-request=") == 3
    assert "No request matches." in nothing.text and "No request matches." in future.text
    assert bad_time.status_code == 422 and "since: a date and time" in bad_time.text


async def test_the_request_log_pages_newest_first(services: Services, up: UpstreamServer) -> None:
    from warden.console import requests as page

    await _requests(services, up, 3)
    old, page.PAGE = page.PAGE, 2
    try:
        async with console_client(services) as (c, _):
            first = await c.get("/ui/requests")
            cursor = first.text.split('id="older" href="/ui/requests?before=', 1)[1].split('"', 1)[0]
            second = await c.get("/ui/requests", params={"before": cursor})
    finally:
        page.PAGE = old
    assert first.text.count("data-request=") == 2 and second.text.count("data-request=") == 1
    assert first.text.index('data-request="req-2"') < first.text.index('data-request="req-1"')
    assert 'data-request="req-0"' in second.text and 'id="older"' not in second.text


async def test_one_requests_explanation_says_what_is_stored_and_what_is_not(
        services: Services, up: UpstreamServer) -> None:
    await _requests(services, up, 1)
    async with services.db.session() as s:  # a request that failed over once before it was answered
        await s.execute(update(SpendRow).where(SpendRow.request_id == "req-0").values(attempts=2))
        await s.commit()
    async with console_client(services) as (c, _):
        page = await c.get("/ui/requests/req-0")
        missing = await c.get("/ui/requests/req-nope")
    assert page.status_code == 200 and f"Answered by openai/{MODEL} with credential cred_" in page.text
    assert "It took 2 attempts" in page.text and "plan" in page.text and "is not stored" in page.text
    assert "4.0×" in page.text  # the fallback cost guard in force
    assert missing.status_code == 404 and 'data-code="request_not_found"' in missing.text


async def test_the_audit_page_filters_verifies_and_exports(services: Services) -> None:
    async with client_for(services) as admin:
        await admin.post("/api/keys", json={"name": "one"})
        await admin.post("/api/keys", json={"name": "two"})
    async with console_client(services) as (c, csrf):
        page = await c.get("/ui/audit")
        keys_only = await c.get("/ui/audit", params={"action": "api_key."})
        verified = await c.post("/ui/audit/verify", headers={"x-csrf-token": csrf, "hx-request": "true"})
        no_csrf = await c.post("/ui/audit/verify")
        export = await c.get("/ui/audit/export")
        async with services.db.session() as s:  # tamper with one event: verification must say so
            await s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(action="api_key.forged"))
            await s.commit()
        broken = await c.post("/ui/audit/verify", headers={"x-csrf-token": csrf})
    assert page.status_code == 200 and "console.sign_in" in page.text and "api_key.create" in page.text
    assert keys_only.text.count("data-seq=") == 3 and "console.sign_in" not in keys_only.text
    assert 'data-ok="true"' in verified.text and "Chain intact" in verified.text
    assert no_csrf.status_code == 403
    lines = [orjson.loads(line) for line in export.content.splitlines()]
    assert export.headers["content-disposition"].startswith('attachment; filename="warden-audit-')
    assert [e["action"] for e in lines].count("api_key.create") == 3 and all("hash" in e for e in lines)
    assert 'data-ok="false"' in broken.text and "Chain broken" in broken.text


async def test_only_the_operator_verifies_the_chain(services: Services) -> None:
    async with client_for(services) as admin:
        ws = (await admin.post("/api/workspaces", json={"name": "acme"})).json()
    other = await services.accounts.create_key(ws["id"], "acme-admin", "admin")
    async with console_client(services) as (root, _):  # the operator's sign-in is not acme's to see
        assert "console.sign_in" in (await root.get("/ui/audit")).text
    async with console_client(services, other.key) as (c, csrf):
        page = await c.get("/ui/audit")
        verify = await c.post("/ui/audit/verify", data={"csrf_token": csrf})
        export = await c.get("/ui/audit/export")
    assert "verified by the operator" in page.text and 'id="verify"' not in page.text
    assert page.text.count("<code>console.sign_in</code>") == 1  # its own events only
    assert verify.status_code == 403 and 'data-code="admin_required"' in verify.text
    assert all(orjson.loads(line)["workspace_id"] == ws["id"] for line in export.content.splitlines())
