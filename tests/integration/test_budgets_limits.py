"""Budgets and rate limits through the real app (ASGI) in front of a loopback
provider, on both state backends; the budget API; fail-closed and fail-open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from sqlalchemy import select

from tests.support.app import ADMIN_KEY, REDIS_URL, client_for
from tests.support.envelope import assert_envelope
from warden.config import load_settings
from warden.gateway.complexity import estimate_tokens
from warden.gateway.context import CallContext
from warden.gateway.types import ChatRequest, Message, TextPart
from warden.services import Services
from warden.store.models import AuditEvent
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, UpstreamServer

UPSTREAM_KEY = "sk-up-openai-0123456789"
OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
PRICED = [{"id": "gpt-4o-mini", "input_price": 0, "output_price": 1000},
          {"id": "mystery-model"}]  # not in any price list
COST = Decimal("0.001") * OUTPUT_TOKENS  # exact: prompt free, max_tokens = real output
BODY = {"model": "openai/gpt-4o-mini", "max_tokens": OUTPUT_TOKENS,
        "messages": [{"role": "user", "content": "count me"}]}


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once closed


async def start(tmp_path: Path, **overrides) -> Services:  # noqa: ANN003
    return await Services.start(load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY,
                                              access_log=False, **overrides))


@pytest.fixture(params=["memory", "redis"])
async def svc(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    if request.param == "memory":
        services = await start(tmp_path)
    else:
        if not REDIS_URL:
            pytest.skip("WARDEN_TEST_REDIS_URL is not set")
        prefix = f"wtest:{uuid.uuid4().hex[:12]}:"
        services = await start(tmp_path, redis_url=REDIS_URL, redis_prefix=prefix)
    yield services
    await services.close()
    if request.param == "redis":
        client = redis_sync.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEY) as up:
        yield up


@pytest.fixture
async def api(svc: Services, upstream: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(svc) as c:
        r = await c.post("/api/byok", json={"provider": "openai", "label": "main", "api_key": UPSTREAM_KEY,
                                            "base_url": upstream.base_url, "models": PRICED})
        assert r.status_code == 201, r.text
        yield c


async def put_budget(c: httpx.AsyncClient, **body) -> dict:  # noqa: ANN003
    r = await c.put("/api/budgets", json={"scope": "workspace", "period": "month", **body})
    assert r.status_code == 200, r.text
    return r.json()


async def budgets(c: httpx.AsyncClient) -> list[dict]:
    r = await c.get("/api/budgets")
    assert r.status_code == 200, r.text
    return r.json()["budgets"]


# --- the API --------------------------------------------------------------------------


async def new_agent(api: httpx.AsyncClient, name: str) -> str:
    """A real agent of the caller's workspace (an agent budget names one), by id."""
    r = await api.post("/api/agents", json={"name": name, "instructions": "Help."})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_budget_crud_with_audit(api: httpx.AsyncClient, svc: Services) -> None:
    ws = await put_budget(api, limit_usd="5", per_request_cap_usd="0.5")
    assert (ws["scope"], ws["period"], Decimal(ws["limit_usd"])) == ("workspace", "month", 5)
    assert Decimal(ws["remaining_usd"]) == 5 and Decimal(ws["spent_usd"]) == 0
    again = await put_budget(api, limit_usd="7")  # same scope and period: an update
    assert again["id"] == ws["id"] and Decimal(again["limit_usd"]) == 7
    assert again["per_request_cap_usd"] is None
    key = (await api.post("/api/keys", json={"name": "bot"})).json()
    kb = await put_budget(api, scope="key", scope_id=key["id"], period="day", limit_usd="1")
    agent = await new_agent(api, "agent-7")
    ab = await put_budget(api, scope="agent", scope_id=agent, period="total", limit_usd="2")
    listed = await budgets(api)
    assert {(b["scope"], b["scope_id"], b["period"]) for b in listed} == {
        ("workspace", ws["scope_id"], "month"), ("key", key["id"], "day"), ("agent", agent, "total")}
    r = await api.put("/api/budgets", json={"scope": "key", "scope_id": "key_nope", "limit_usd": "1"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "key_not_found")
    r = await api.put("/api/budgets", json={"scope": "agent", "limit_usd": "1"})
    assert (r.status_code, r.json()["error"]["param"]) == (422, "scope_id")
    r = await api.put("/api/budgets", json={"scope": "workspace", "limit_usd": "-1"})
    assert r.status_code == 422
    assert (await api.delete(f"/api/budgets/{kb['id']}")).status_code == 204
    r = await api.delete(f"/api/budgets/{kb['id']}")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "budget_not_found")
    assert {b["id"] for b in await budgets(api)} == {ws["id"], ab["id"]}
    async with svc.db.session() as s:
        actions = list((await s.execute(select(AuditEvent.action).where(
            AuditEvent.action.like("budget.%")).order_by(AuditEvent.seq))).scalars())
    assert actions == ["budget.put"] * 4 + ["budget.delete"]


async def test_members_cannot_manage_budgets(api: httpx.AsyncClient, svc: Services) -> None:
    member = (await api.post("/api/keys", json={"name": "m"})).json()["key"]
    async with client_for(svc, member) as c:
        r = await c.put("/api/budgets", json={"scope": "workspace", "limit_usd": "1"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_required")


# --- enforcement ----------------------------------------------------------------------


async def test_budget_admits_exactly_what_fits_and_never_calls_upstream_after(
        api: httpx.AsyncClient, upstream: UpstreamServer) -> None:
    await put_budget(api, limit_usd=str(COST * 2))
    assert [(await api.post("/v1/chat/completions", json=BODY)).status_code for _ in range(2)] == [200, 200]
    r = await api.post("/v1/chat/completions", json=BODY)
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["type"]) == (429, "budget_exceeded", "insufficient_quota")
    assert "workspace month budget" in err["message"]
    assert len(upstream.requests) == 2
    (b,) = await budgets(api)
    assert Decimal(b["spent_usd"]) == COST * 2 and Decimal(b["reserved_usd"]) == 0


async def test_key_budget_refuses_only_that_key(api: httpx.AsyncClient, svc: Services) -> None:
    key = (await api.post("/api/keys", json={"name": "small"})).json()
    await put_budget(api, scope="key", scope_id=key["id"], limit_usd=str(COST))
    async with client_for(svc, key["key"]) as small:
        assert (await small.post("/v1/chat/completions", json=BODY)).status_code == 200
        r = await small.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 429 and f"key '{key['id']}'" in r.json()["error"]["message"]
    assert (await api.post("/v1/chat/completions", json=BODY)).status_code == 200  # the admin key


async def test_upstream_failure_releases_the_reservation(api: httpx.AsyncClient,
                                                         upstream: UpstreamServer) -> None:
    await put_budget(api, limit_usd=str(COST))
    upstream.enqueue(Behaviour(status=400, error_message="bad"))
    r = await api.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 400
    (b,) = await budgets(api)
    assert Decimal(b["spent_usd"]) == 0 and Decimal(b["reserved_usd"]) == 0
    # The whole budget is still there for the next request.
    assert (await api.post("/v1/chat/completions", json=BODY)).status_code == 200


async def test_stream_settles_real_cost_at_its_end(api: httpx.AsyncClient) -> None:
    await put_budget(api, limit_usd="1")
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with api.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        text = "".join([line async for line in r.aiter_lines()])
    assert "[DONE]" in text
    (b,) = await budgets(api)
    assert Decimal(b["spent_usd"]) == COST and Decimal(b["reserved_usd"]) == 0


async def test_budget_refusal_gives_back_the_rate_units(api: httpx.AsyncClient, svc: Services) -> None:
    key = (await api.post("/api/keys", json={"name": "both", "rpm_limit": 2})).json()
    await put_budget(api, scope="key", scope_id=key["id"], limit_usd=str(COST))
    async with client_for(svc, key["key"]) as c:
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200
        r = await c.post("/v1/chat/completions", json=BODY)
        assert r.json()["error"]["code"] == "budget_exceeded"
        await put_budget(api, scope="key", scope_id=key["id"], limit_usd=str(COST * 5))
        # Only possible if the refused request did not keep its request unit (rpm 2).
        r = await c.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "0"
        r = await c.post("/v1/chat/completions", json=BODY)
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    (b,) = [b for b in await budgets(api) if b["scope"] == "key"]
    assert Decimal(b["spent_usd"]) == COST * 2  # the rate-refused request charged nothing


async def test_per_request_cap_and_unknown_price(api: httpx.AsyncClient, upstream: UpstreamServer) -> None:
    await put_budget(api, limit_usd="100", per_request_cap_usd=str(COST))
    r = await api.post("/v1/chat/completions", json={**BODY, "max_tokens": OUTPUT_TOKENS + 1})
    assert r.status_code == 429 and "per-request cap" in r.json()["error"]["message"]
    assert (await api.post("/v1/chat/completions", json=BODY)).status_code == 200
    r = await api.post("/v1/chat/completions", json={**BODY, "model": "openai/mystery-model"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "price_unknown")
    assert "openai/mystery-model" in r.json()["error"]["message"]
    # A priced fallback is still served: the unpriced step is dropped, not the request.
    r = await api.post("/v1/chat/completions", json={**BODY, "model": "openai/mystery-model",
                                                     "warden": {"fallbacks": ["openai/gpt-4o-mini"]}})
    assert r.status_code == 200 and r.headers["x-warden-model"] == "gpt-4o-mini"
    assert [q.body["model"] for q in upstream.requests] == ["gpt-4o-mini", "gpt-4o-mini"]


async def test_unknown_price_is_served_without_a_budget(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/chat/completions", json={**BODY, "model": "openai/mystery-model"})
    assert r.status_code == 200 and r.headers["x-warden-cost-usd"] == "unknown"


async def test_agent_budget_applies_to_the_agent_runtime(api: httpx.AsyncClient, svc: Services) -> None:
    helper = await new_agent(api, "helper")
    await put_budget(api, scope="agent", scope_id=helper, limit_usd=str(COST))
    req = ChatRequest(model="openai/gpt-4o-mini", messages=[Message("user", [TextPart("hi")])],
                      max_tokens=OUTPUT_TOKENS)
    ws = (await svc.accounts.workspace_by_name("default")).id
    _, info = await svc.gateway.complete(req, CallContext(ws, None, "r1", agent_id=helper))
    assert info.cost_usd == COST
    from warden.errors import BudgetExceeded

    with pytest.raises(BudgetExceeded, match=f"agent '{helper}'"):
        await svc.gateway.complete(req, CallContext(ws, None, "r2", agent_id=helper))
    _, other = await svc.gateway.complete(req, CallContext(ws, None, "r3", agent_id="other"))
    assert other.cost_usd == COST


async def test_workspace_tpm_headers_and_retry_after(api: httpx.AsyncClient, svc: Services) -> None:
    ws = (await svc.accounts.workspace_by_name("default")).id
    r = await api.put(f"/api/workspaces/{ws}/limits", json={"rpm_limit": 100, "tpm_limit": 20})
    assert r.json() == {"rpm_limit": 100, "tpm_limit": 20, "max_fallback_cost_factor": None}
    assert (await api.get(f"/api/workspaces/{ws}/limits")).json()["tpm_limit"] == 20
    assert (await api.get("/api/budgets")).json()["rate_limits"]["tpm_limit"] == 20
    r = await api.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200
    used = r.json()["usage"]["total_tokens"]
    h = r.headers
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-limit-requests"]) == ("20", "100")
    # Charged the estimate first, then adjusted to the real total (a token or two may leak back).
    assert 20 - used <= int(h["x-ratelimit-remaining-tokens"]) <= 20 - used + 2
    assert h["x-ratelimit-remaining-requests"] == "99" and h["x-ratelimit-reset-tokens"].endswith("s")
    prompt = estimate_tokens(ChatRequest(model="x", messages=[Message("user", [TextPart("count me")])]))
    # Fits the limit on its own, not in what is left of it now.
    r = await api.post("/v1/chat/completions", json={**BODY, "max_tokens": 20 - prompt})
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["type"]) == (429, "rate_limit_exceeded", "rate_limit_error")
    assert int(r.headers["retry-after"]) >= 1 and "workspace limit of 20 tokens" in err["message"]
    r = await api.post("/v1/chat/completions", json={**BODY, "max_tokens": 500})
    assert "retry-after" not in r.headers and "exceed" in r.json()["error"]["message"]


# --- the state store down -----------------------------------------------------------------


async def test_fail_closed_then_fail_open_with_redis_down(tmp_path: Path, upstream: UpstreamServer) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    for fail_open, expected in ((False, 503), (True, 200)):
        svc = await start(tmp_path / str(fail_open), redis_url=down, limits_fail_open=fail_open)
        try:
            async with client_for(svc) as c:
                await c.post("/api/byok", json={"provider": "openai", "label": "main",
                                                "api_key": UPSTREAM_KEY, "base_url": upstream.base_url,
                                                "models": PRICED})
                put = await c.put("/api/budgets", json={"scope": "workspace", "limit_usd": "1"})
                assert put.status_code == 200 and put.json()["spent_usd"] is None  # unknown now
                r = await c.post("/v1/chat/completions", json=BODY)
                assert r.status_code == expected, r.text
                if not fail_open:
                    assert r.json()["error"]["code"] == "state_unavailable"
                ready = await c.get("/readyz")
                assert ready.status_code == 503 and ready.json()["down"] == ["state (redis)"]
                assert ready.json()["checks"] == {"database": "ok", "state": "unreachable"}
        finally:
            await svc.close()
    assert len(upstream.requests) == 1  # only the fail-open request went upstream


async def test_an_agent_budget_names_an_agent_of_this_workspace(api: httpx.AsyncClient, svc: Services) -> None:
    """Issue 13, item 9a: another workspace's agent id is "not found", as its keys are."""
    acme = (await api.post("/api/workspaces", json={"name": "acme"})).json()["id"]
    acme_admin = await svc.accounts.create_key(acme, "acme-admin", "admin")
    async with client_for(svc, key=acme_admin.key) as other:
        theirs = await new_agent(other, "theirs")
        own = await new_agent(api, "ours")
        for scope_id in (theirs, "agt_does_not_exist"):
            r = await api.put("/api/budgets", json={"scope": "agent", "scope_id": scope_id, "limit_usd": "1"})
            err = assert_envelope(r, 404, "agent_not_found")
            assert scope_id in err["message"] and "Traceback" not in r.text
        assert [b["scope_id"] for b in await budgets(api)] == []  # nothing was written
        assert (await other.put("/api/budgets", json={"scope": "agent", "scope_id": own,
                                                      "limit_usd": "1"})).status_code == 404
        r = await other.put("/api/budgets", json={"scope": "agent", "scope_id": theirs, "limit_usd": "1"})
        assert r.status_code == 200 and r.json()["scope_id"] == theirs
