from __future__ import annotations

import httpx

from tests.support.envelope import assert_envelope
from tests.support.app import ADMIN_KEY, client_for
from warden.services import Services


async def test_missing_key_is_401_in_envelope(anon: httpx.AsyncClient) -> None:
    resp = await anon.get("/api/keys")
    err = assert_envelope(resp, 401, "invalid_api_key")
    assert err["type"] == "authentication_error"


async def test_wrong_scheme_and_unknown_key(services: Services) -> None:
    async with client_for(services, key=None) as c:
        r = await c.get("/api/keys", headers={"authorization": "Basic abc"})
        assert_envelope(r, 401, "invalid_api_key")
        r = await c.get("/api/keys", headers={"authorization": "Bearer wk-not-a-real-key-000000000"})
        assert "invalid or revoked" in assert_envelope(r, 401, "invalid_api_key")["message"]


async def test_create_list_revoke_cycle(client: httpx.AsyncClient, services: Services) -> None:
    r = await client.post("/api/keys", json={"name": "ci-bot", "role": "member"})
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("wk-") and len(created["key"]) > 40
    assert created["prefix"] == created["key"][:7]
    listed = (await client.get("/api/keys")).json()
    assert {k["name"] for k in listed} == {"bootstrap-admin", "ci-bot"}
    assert all("key" not in k for k in listed)

    async with client_for(services, key=created["key"]) as member:
        # A member is authenticated but may not manage keys.
        assert_envelope(await member.get("/api/keys"), 403, "admin_required")
        r = await client.delete(f"/api/keys/{created['id']}")
        assert r.json()["revoked_at"] is not None
        # The instance that revoked honours it at once, despite its cache.
        assert_envelope(await member.get("/api/keys"), 401, "invalid_api_key")


async def test_other_workspace_sees_404_not_403(client: httpx.AsyncClient, services: Services) -> None:
    r = await client.post("/api/workspaces", json={"name": "acme"})
    assert r.status_code == 201
    acme = await services.accounts.create_key(r.json()["id"], "acme-admin", "admin")
    admin_keys = (await client.get("/api/keys")).json()
    async with client_for(services, key=acme.key) as other:
        assert [k["name"] for k in (await other.get("/api/keys")).json()] == ["acme-admin"]
        r = await other.delete(f"/api/keys/{admin_keys[0]['id']}")
        assert_envelope(r, 404, "key_not_found")
        # Only the default workspace's admins manage workspaces.
        assert_envelope(await other.get("/api/workspaces"), 403, "admin_required")
    assert (await client.get("/api/keys")).json()[0]["revoked_at"] is None


async def test_validation_names_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/keys", json={"name": "x", "role": "owner"})
    err = assert_envelope(r, 422, "validation_error")
    assert err["param"] == "role"
    r = await client.post("/api/keys", content=b"{not json", headers={"content-type": "application/json"})
    assert_envelope(r, 400, "invalid_json")
    r = await client.post("/api/workspaces", json={"name": "bad name!"})
    assert assert_envelope(r, 422, "validation_error")["param"] == "name"


async def test_duplicate_workspace_conflicts(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/workspaces", json={"name": "dup"})).status_code == 201
    assert_envelope(await client.post("/api/workspaces", json={"name": "dup"}), 409, "workspace_exists")


async def test_request_id_is_echoed_when_sane(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"x-request-id": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk" and len(r.headers["x-request-id"]) == 32


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/api/nope"), 404, "not_found")
    assert_envelope(await client.put("/api/keys"), 405, "method_not_allowed")


async def test_body_limit(services: Services) -> None:
    services.settings.max_body_bytes = 2048
    async with client_for(services) as c:
        r = await c.post("/api/keys", json={"name": "x" * 5000})
        assert_envelope(r, 413, "payload_too_large")

        async def chunks():
            for _ in range(4):
                yield b"x" * 1024

        r = await c.post("/api/keys", content=chunks(), headers={"content-type": "application/json"})
        assert_envelope(r, 413, "payload_too_large")


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    text = (await client.get("/metrics")).text
    assert 'warden_http_requests_total{method="GET",route="/readyz",status="200"}' in text
    assert "warden_http_request_duration_seconds_bucket" in text


async def test_readyz_reports_database_down(services: Services) -> None:
    async with client_for(services) as c:
        await services.db.engine.dispose()
        services.db.engine.url  # noqa: B018 - engine stays but we break its URL below
        from warden.store.db import Database

        services.db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "unreachable"


async def test_bootstrap_admin_key_works(client: httpx.AsyncClient) -> None:
    assert client.headers["authorization"] == f"Bearer {ADMIN_KEY}"
    assert (await client.get("/api/keys")).status_code == 200
