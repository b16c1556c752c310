"""BYOK over HTTP: the real app, real SQLite file, real loopback providers."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.support.app import client_for
from warden.services import Services
from warden.store import audit
from warden.store.models import AuditEvent, Credential
from warden.testing.upstream import Behaviour, UpstreamServer

SECRET = "sk-proj-PLAINtextNeverStored0123456789wxyz"
OTHER_SECRET = "sk-proj-SECONDsecretNeverStored987654qrst"


def assert_envelope(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code
    assert set(err) >= {"type", "code", "message", "request_id"}
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def audit_actions(services: Services) -> list[tuple[str, str | None]]:
    async with services.db.session() as s:
        rows = (await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        return [(e.action, e.target) for e in rows if e.action.startswith(("byok.", "vault."))]


async def test_secret_never_leaves_in_plaintext(
    services: Services, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []
    async with client_for(services) as c, UpstreamServer("openai", api_key=SECRET) as up:
        r = await c.post("/api/byok", json={"provider": "openai-compatible", "api_key": SECRET,
                                            "label": "lab", "base_url": up.base_url,
                                            "models": [{"id": "gpt-4o-mini", "input_price": 0.15}]})
        assert r.status_code == 201, r.text
        view = r.json()
        bodies.append(r.content)
        assert view["masked"] == "sk-…wxyz" and view["fingerprint"].startswith("sha256:")
        assert view["source"] == "db" and view["status"] == "active" and "api_key" not in view
        for resp in (
            await c.get("/api/byok"),
            await c.get(f"/api/byok/{view['id']}"),
            await c.post(f"/api/byok/{view['id']}/test"),
            await c.patch(f"/api/byok/{view['id']}", json={"api_key": OTHER_SECRET}),
            await c.post(f"/api/byok/{view['id']}/test"),
        ):
            assert resp.status_code == 200, resp.text
            bodies.append(resp.content)
        # The upstream really received the (new) key: it is usable, just never shown.
        assert up.last.headers["authorization"] == f"Bearer {OTHER_SECRET}"
    assert [b for b in bodies if SECRET.encode() in b or OTHER_SECRET.encode() in b] == []
    assert bodies[-1] and b'"status":"auth_failed"' in bodies[-1]  # upstream wants the first key

    stored = b"".join(p.read_bytes() for p in data_dir.glob("warden.db*"))
    assert len(stored) > 10_000 and b"byok.create" in stored  # the right files, with data
    for secret in (SECRET, OTHER_SECRET):
        assert secret.encode() not in stored
        assert secret[-20:].encode() not in stored  # not even a long tail
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # logging was on, so the absence below means something
    assert SECRET not in logged and OTHER_SECRET not in logged


async def test_crud_cycle_is_audited(client: httpx.AsyncClient, services: Services) -> None:
    r = await client.post("/api/byok", json={"provider": "groq", "api_key": SECRET})
    cred = r.json()
    assert r.status_code == 201 and cred["label"] == "default" and cred["created_by"].startswith("key:")
    r = await client.patch(f"/api/byok/{cred['id']}",
                           json={"label": "team-a", "status": "disabled",
                                 "models": [{"id": "llama-3.3-70b", "capabilities": ["tools"],
                                             "context_window": 131072, "quality": 0.7}]})
    patched = r.json()
    assert (patched["label"], patched["status"]) == ("team-a", "disabled")
    assert patched["models"] == [{"id": "llama-3.3-70b", "capabilities": ["tools"],
                                  "context_window": 131072, "quality": 0.7}]
    assert patched["fingerprint"] == cred["fingerprint"]  # the key did not change
    r = await client.patch(f"/api/byok/{cred['id']}", json={"api_key": OTHER_SECRET})
    assert r.json()["fingerprint"] != cred["fingerprint"] and r.json()["masked"] == "sk-…qrst"
    r = await client.delete(f"/api/byok/{cred['id']}")
    assert r.status_code == 200 and r.json()["id"] == cred["id"]
    assert_envelope(await client.get(f"/api/byok/{cred['id']}"), 404, "credential_not_found")
    assert await audit_actions(services) == [
        ("byok.create", cred["id"]), ("byok.update", cred["id"]),
        ("byok.update", cred["id"]), ("byok.delete", cred["id"]),
    ]
    async with services.db.session() as s:
        assert (await audit.verify(s)).ok
        changed = [e.data.get("changed") for e in (await s.execute(
            select(AuditEvent).where(AuditEvent.action == "byok.update"))).scalars()]
    assert changed == [["label", "status", "models"], ["api_key"]]


async def test_member_403_and_other_workspace_404(client: httpx.AsyncClient, services: Services) -> None:
    cred = (await client.post("/api/byok", json={"provider": "openai", "api_key": SECRET})).json()
    ws = (await client.post("/api/workspaces", json={"name": "acme"})).json()
    default_ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(default_ws.id, "m", "member")
    other = await services.accounts.create_key(ws["id"], "acme-admin", "admin")
    async with client_for(services, member.key) as m:
        assert_envelope(await m.get("/api/byok"), 403, "admin_required")
        assert_envelope(await m.post("/api/byok", json={"provider": "openai", "api_key": SECRET}),
                        403, "admin_required")
        providers = (await m.get("/api/providers")).json()  # any authenticated key
        assert {p["id"] for p in providers} >= {"openai", "anthropic", "gemini", "ollama"}
    async with client_for(services, other.key) as o:
        assert (await o.get("/api/byok")).json() == []
        for resp in (await o.get(f"/api/byok/{cred['id']}"),
                     await o.patch(f"/api/byok/{cred['id']}", json={"label": "stolen"}),
                     await o.post(f"/api/byok/{cred['id']}/test"),
                     await o.delete(f"/api/byok/{cred['id']}")):
            assert_envelope(resp, 404, "credential_not_found")
    assert (await client.get(f"/api/byok/{cred['id']}")).json()["label"] == "default"


async def test_providers_table(client: httpx.AsyncClient) -> None:
    providers = {p["id"]: p for p in (await client.get("/api/providers")).json()}
    assert providers["ollama"] == {
        "id": "ollama", "name": "Ollama (local)", "wire": "openai",
        "base_url": "http://127.0.0.1:11434/v1", "auth": "none", "env": [],
        "key_required": False, "local": True,
    }
    assert providers["openai-compatible"]["base_url"] is None
    assert providers["gemini"]["env"] == ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
    assert providers["anthropic"]["auth"] == "x-api-key"


@pytest.mark.parametrize("query", [f"api_key={SECRET}", "token=abc", f"q={SECRET}",
                                   "x=Bearer%20abcdefghijklmnop"])
async def test_secret_in_query_refused(client: httpx.AsyncClient, services: Services, query: str) -> None:
    r = await client.post(f"/api/byok?{query}", json={"provider": "openai", "api_key": SECRET})
    err = assert_envelope(r, 400, "secret_in_query")
    assert SECRET not in r.text and err["type"] == "invalid_request_error"
    assert (await client.get("/api/byok")).json() == []
    assert_envelope(await client.get(f"/api/providers?{query}"), 400, "secret_in_query")


async def test_harmless_query_is_fine(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/byok?page=2")).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"provider": "nope", "api_key": SECRET}, "provider"),
        ({"api_key": SECRET}, "provider"),
        ({"provider": "openai"}, "api_key"),
        ({"provider": "openai", "api_key": "   "}, "api_key"),
        ({"provider": "openai", "api_key": "sk-has space-0123456789"}, "api_key"),
        ({"provider": "openai", "api_key": "x" * 5000}, "api_key"),
        ({"provider": "openai", "api_key": SECRET, "label": "l" * 129}, "label"),
        ({"provider": "openai", "api_key": SECRET, "label": "-dash first"}, "label"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "ftp://host/v1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https://u:p@host/v1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https://host/v1?key=1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https://host/v1#frag"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https:///v1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https://ho st/v1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "http://host:99999/v1"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "base_url": "https://" + "h" * 2100}, "base_url"),
        ({"provider": "openai-compatible"}, "base_url"),
        ({"provider": "openai", "api_key": SECRET, "models": [{"id": "m", "capabilities": ["telepathy"]}]},
         "models.0.capabilities.0"),
        ({"provider": "openai", "api_key": SECRET, "models": [{"id": "m", "input_price": -1}]},
         "models.0.input_price"),
        ({"provider": "openai", "api_key": SECRET, "models": [{"id": "m"}, {"id": "m"}]}, "models"),
        ({"provider": "openai", "api_key": SECRET, "models": [{"id": f"m{i}"} for i in range(501)]},
         "models"),
        ({"provider": "openai", "api_key": SECRET, "extra": 1}, "extra"),
    ],
)
async def test_bad_input_422_names_field_and_writes_nothing(
    client: httpx.AsyncClient, services: Services, body: dict, param: str
) -> None:
    r = await client.post("/api/byok", json=body)
    err = assert_envelope(r, 422, "validation_error")
    assert err["param"] == param
    assert SECRET not in r.text
    assert (await client.get("/api/byok")).json() == []
    assert await audit_actions(services) == []


async def test_patch_validation_and_conflicts(client: httpx.AsyncClient, services: Services) -> None:
    a = (await client.post("/api/byok", json={"provider": "openai", "api_key": SECRET})).json()
    assert_envelope(await client.post("/api/byok", json={"provider": "openai", "api_key": SECRET}),
                    409, "credential_exists")
    b = (await client.post("/api/byok", json={"provider": "openai", "api_key": SECRET, "label": "b"})).json()
    assert_envelope(await client.patch(f"/api/byok/{b['id']}", json={"label": "default"}),
                    409, "credential_exists")
    assert_envelope(await client.patch(f"/api/byok/{a['id']}", json={"status": "gone"}),
                    422, "validation_error")
    err = assert_envelope(await client.patch(f"/api/byok/{a['id']}", json={"label": None}),
                          422, "validation_error")
    assert err["param"] == "label"
    err = assert_envelope(await client.patch(f"/api/byok/{a['id']}", json={"api_key": None}),
                          422, "validation_error")
    assert err["param"] == "api_key"
    local = (await client.post("/api/byok", json={"provider": "openai-compatible",
                                                  "base_url": "http://127.0.0.1:8000/v1/"})).json()
    assert local["base_url"] == "http://127.0.0.1:8000/v1" and local["masked"] is None
    err = assert_envelope(await client.patch(f"/api/byok/{local['id']}", json={"base_url": None}),
                          422, "validation_error")
    assert err["param"] == "base_url"
    assert (await client.get(f"/api/byok/{local['id']}")).json()["base_url"] == "http://127.0.0.1:8000/v1"
    assert_envelope(await client.patch("/api/byok/cred_missing", json={"label": "x"}), 404,
                    "credential_not_found")
    assert [a for a, _ in await audit_actions(services)] == ["byok.create"] * 3


async def test_key_test_statuses(client: httpx.AsyncClient, services: Services) -> None:
    async with UpstreamServer("openai", api_key=SECRET, models=["m1", "m2", "m3"]) as up:
        good = (await client.post("/api/byok", json={
            "provider": "openai-compatible", "api_key": SECRET, "base_url": up.base_url})).json()
        bad = (await client.post("/api/byok", json={
            "provider": "openai-compatible", "api_key": OTHER_SECRET, "base_url": up.base_url,
            "label": "bad"})).json()
        r = (await client.post(f"/api/byok/{good['id']}/test")).json()
        assert (r["ok"], r["status"], r["models_count"]) == (True, "ok", 3)
        assert r["latency_ms"] >= 0
        r = (await client.post(f"/api/byok/{bad['id']}/test")).json()
        assert (r["ok"], r["status"], r["models_count"]) == (False, "auth_failed", None)
        assert OTHER_SECRET not in r["detail"] and OTHER_SECRET[-12:] not in r["detail"]
        up.enqueue(Behaviour(status=500))
        r = (await client.post(f"/api/byok/{good['id']}/test")).json()
        assert (r["ok"], r["status"]) == (False, "error")
    gone = (await client.post("/api/byok", json={
        "provider": "openai-compatible", "api_key": SECRET, "label": "gone",
        "base_url": f"http://127.0.0.1:{free_port()}/v1"})).json()
    r = (await client.post(f"/api/byok/{gone['id']}/test")).json()
    assert (r["ok"], r["status"]) == (False, "unreachable")
    async with services.db.session() as s:
        tests = [(e.target, e.data["status"]) for e in (await s.execute(
            select(AuditEvent).where(AuditEvent.action == "byok.test").order_by(AuditEvent.seq)
        )).scalars()]
    assert tests == [(good["id"], "ok"), (bad["id"], "auth_failed"), (good["id"], "error"),
                     (gone["id"], "unreachable")]


async def test_env_fallback_default_workspace_only(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("GOOGLE_API_KEY", OTHER_SECRET)
    listed = {v["id"]: v for v in (await client.get("/api/byok")).json()}
    assert set(listed) == {"env:openai", "env:gemini"}
    assert listed["env:openai"]["source"] == "env" and listed["env:openai"]["masked"] == "sk-…wxyz"
    r = await client.get("/api/byok/env:openai")
    assert r.status_code == 200 and SECRET not in r.text
    assert_envelope(await client.patch("/api/byok/env:openai", json={"label": "x"}), 409,
                    "env_credential_readonly")
    assert_envelope(await client.delete("/api/byok/env:openai"), 409, "env_credential_readonly")
    assert_envelope(await client.get("/api/byok/env:groq"), 404, "credential_not_found")

    default_ws = await services.accounts.workspace_by_name("default")
    resolved = {c.id: c for c in await services.byok.cache.resolved_credentials(default_ws.id)}
    assert resolved["env:openai"].api_key == SECRET and resolved["env:gemini"].api_key == OTHER_SECRET
    assert resolved["env:gemini"].auth == "x-goog-api-key"

    # A stored active credential takes over from the environment; disabling it hands back.
    stored = (await client.post("/api/byok", json={"provider": "openai", "api_key": OTHER_SECRET})).json()
    ids = [v["id"] for v in (await client.get("/api/byok")).json()]
    assert stored["id"] in ids and "env:openai" not in ids
    resolved = {c.provider: c for c in await services.byok.cache.resolved_credentials(default_ws.id)}
    assert resolved["openai"].source == "db" and resolved["openai"].api_key == OTHER_SECRET
    await client.patch(f"/api/byok/{stored['id']}", json={"status": "disabled"})
    assert "env:openai" in [v["id"] for v in (await client.get("/api/byok")).json()]
    resolved = {c.provider: c for c in await services.byok.cache.resolved_credentials(default_ws.id)}
    assert resolved["openai"].source == "env"

    # Another workspace never sees the environment's keys.
    ws = (await client.post("/api/workspaces", json={"name": "acme"})).json()
    other = await services.accounts.create_key(ws["id"], "acme-admin", "admin")
    async with client_for(services, other.key) as o:
        assert (await o.get("/api/byok")).json() == []
        assert_envelope(await o.get("/api/byok/env:openai"), 404, "credential_not_found")
        assert_envelope(await o.post("/api/byok/env:openai/test"), 404, "credential_not_found")
        assert_envelope(await o.delete("/api/byok/env:openai"), 404, "credential_not_found")
    assert await services.byok.cache.resolved_credentials(ws["id"]) == []


async def test_moving_base_url_needs_the_key_again(client: httpx.AsyncClient) -> None:
    async with UpstreamServer("openai") as evil:
        r = await client.post("/api/byok", json={"provider": "openai", "api_key": "sk-real-0123456789",
                                                 "label": "main"})
        cred = r.json()
        r = await client.patch(f"/api/byok/{cred['id']}", json={"base_url": evil.base_url})
        err = assert_envelope(r, 422, "api_key_required")
        assert err["param"] == "api_key"
        assert (await client.get(f"/api/byok/{cred['id']}")).json()["base_url"] is None
        r = await client.post(f"/api/byok/{cred['id']}/test")
        assert all("sk-real" not in str(req.headers) for req in evil.requests)
        # With the key sent again the move is allowed (the owner of the key decided it).
        r = await client.patch(f"/api/byok/{cred['id']}",
                               json={"base_url": evil.base_url, "api_key": "sk-other-0123456789"})
        assert r.status_code == 200 and r.json()["base_url"] == evil.base_url


# --- where a tenant may point a credential (issue 13, item 1) --------------------

INNER_FORMS = ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}",
               "http://[::ffff:127.0.0.1]:{port}", "http://2130706433:{port}",
               "http://0x7f000001:{port}", "http://127.1:{port}"]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def tenant(services: Services, client: httpx.AsyncClient, name: str = "acme") -> tuple[str, str, str]:
    """A workspace other than ``default``: (id, admin key, member key)."""
    ws = (await client.post("/api/workspaces", json={"name": name})).json()["id"]
    admin = await services.accounts.create_key(ws, f"{name}-admin", "admin")
    member = await services.accounts.create_key(ws, f"{name}-member", "member")
    return ws, admin.key, member.key


async def stored_with_url(services: Services, admin: httpx.AsyncClient, base_url: str,
                          label: str = "default") -> str:
    """A tenant credential whose stored base_url is ``base_url`` (as a row written before the
    check existed, or by anyone who can write the database, would hold)."""
    r = await admin.post("/api/byok", json={"provider": "openai-compatible", "api_key": SECRET,
                                            "base_url": "https://8.8.8.8/v1", "label": label,
                                            "models": [{"id": "gpt-4o-mini"}]})
    assert r.status_code == 201, r.text
    async with services.db.transaction() as s:
        row = await s.get(Credential, r.json()["id"])
        row.base_url = base_url
    services.byok.cache.invalidate()
    return r.json()["id"]


@pytest.mark.parametrize("form", INNER_FORMS)
async def test_a_tenant_admin_cannot_point_base_url_inward(
    client: httpx.AsyncClient, services: Services, form: str
) -> None:
    _, admin_key, _ = await tenant(services, client)
    async with UpstreamServer("openai", api_key=SECRET) as up, client_for(services, admin_key) as admin:
        url = form.format(port=up.port) + "/v1"
        r = await admin.post("/api/byok", json={"provider": "openai-compatible", "api_key": SECRET,
                                                "base_url": url})
        err = assert_envelope(r, 422, "base_url_refused")
        assert err["param"] == "base_url" and "WARDEN_EGRESS_ALLOW" in err["message"]
        assert (await admin.get("/api/byok")).json() == []
        public = (await admin.post("/api/byok", json={"provider": "openai", "api_key": SECRET})).json()
        r = await admin.patch(f"/api/byok/{public['id']}", json={"base_url": url, "api_key": OTHER_SECRET})
        assert_envelope(r, 422, "base_url_refused")
        assert (await admin.get(f"/api/byok/{public['id']}")).json()["base_url"] is None
        assert up.requests == []
    assert [a for a, _ in await audit_actions(services)] == ["byok.create"]  # the public one only


@pytest.mark.parametrize("form", INNER_FORMS)
async def test_a_stored_inward_url_reaches_nothing_by_test_or_by_gateway(
    client: httpx.AsyncClient, services: Services, form: str
) -> None:
    _, admin_key, member_key = await tenant(services, client)
    async with UpstreamServer("openai", api_key=SECRET) as up, client_for(services, admin_key) as admin, \
            client_for(services, member_key) as member:
        listening = await stored_with_url(services, admin, form.format(port=up.port) + "/v1")
        r = await admin.post(f"/api/byok/{listening}/test")
        err = assert_envelope(r, 422, "base_url_refused")
        # No port scanner: a port where nothing listens gets the very same answer.
        silent_port = free_port()
        nothing = await stored_with_url(services, admin, form.format(port=silent_port) + "/v1", "silent")
        silent = await admin.post(f"/api/byok/{nothing}/test")
        assert silent.json()["error"]["message"] == err["message"].replace(str(up.port), str(silent_port))
        await admin.patch(f"/api/byok/{nothing}", json={"status": "disabled"})

        r = await member.post("/v1/chat/completions", json=CHAT)
        err = assert_envelope(r, 502, "upstream_address_refused")
        assert "INTERNAL" not in r.text and SECRET not in r.text
        assert up.requests == []  # the listener never saw the key, nor anything else


async def test_the_default_workspace_reaches_local_model_servers(
    client: httpx.AsyncClient, services: Services
) -> None:
    async with UpstreamServer("openai", api_key=SECRET, models=["gpt-4o-mini"]) as up:
        for label, host in (("v4", "127.0.0.1"), ("name", "localhost")):
            cred = (await client.post("/api/byok", json={
                "provider": "openai-compatible", "api_key": SECRET, "label": label,
                "base_url": f"http://{host}:{up.port}/v1", "models": [{"id": "gpt-4o-mini"}]})).json()
            assert (await client.post(f"/api/byok/{cred['id']}/test")).json()["status"] == "ok"
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] and r.headers["x-warden-provider"]
        assert up.last.headers["authorization"] == f"Bearer {SECRET}"


async def test_warden_egress_allow_reopens_an_address_for_tenants(data_dir: Path) -> None:
    from tests.support.app import ADMIN_KEY
    from warden.config import load_settings

    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                                  egress_allow="127.0.0.1"))
    try:
        async with client_for(services) as client:
            _, admin_key, member_key = await tenant(services, client)
        async with UpstreamServer("openai", api_key=SECRET, models=["gpt-4o-mini"]) as up, \
                client_for(services, admin_key) as admin, client_for(services, member_key) as member:
            r = await admin.post("/api/byok", json={"provider": "openai-compatible", "api_key": SECRET,
                                                    "base_url": up.base_url, "models": [{"id": "gpt-4o-mini"}]})
            assert r.status_code == 201, r.text
            assert (await admin.post(f"/api/byok/{r.json()['id']}/test")).json()["status"] == "ok"
            r = await member.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
            # Only what was allowed: ::1 is another address.
            r = await admin.post("/api/byok", json={"provider": "openai-compatible", "api_key": SECRET,
                                                    "label": "v6", "base_url": f"http://[::1]:{up.port}/v1"})
            assert_envelope(r, 422, "base_url_refused")
            assert len(up.requests) == 2
    finally:
        await services.close()
