"""Numbers at the edge: every integer a client sends is checked against the range
of the column it reaches (PostgreSQL INTEGER 2^31-1, BIGINT and SQLite 2^63-1)
and answered with a 422 naming the field, never a 500 from the driver or a cut
stream; JSON ``true`` is not the number 1."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.agents import connect_provider, stream_chat
from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.errors import INT32_MAX, INT64_MAX
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@dataclass
class Targets:
    client: httpx.AsyncClient
    services: Services
    workspace_id: str
    session_id: str
    run_id: str
    agent_id: str


@pytest.fixture
async def targets(any_services: Services) -> AsyncIterator[Targets]:
    """A workspace with one finished run, so every route below reaches its query."""
    async with UpstreamServer("openai") as up, client_for(any_services) as c:
        ws = await connect_provider(any_services, up)
        r = await c.post("/api/agents", json={"name": "counter", "instructions": "Answer."})
        assert r.status_code == 201, r.text
        up.enqueue(Behaviour(text="hello"))
        first = (await stream_chat(c, {"agent_id": r.json()["id"], "message": "hi"}))[0]
        yield Targets(c, any_services, ws, first["session_id"], first["run_id"], r.json()["id"])


# (method, path, body or None, the field named in the error, the largest value it takes)
def _cases(t: Targets, n: int) -> list[tuple[str, str, dict[str, Any] | None, str, int]]:
    return [
        ("GET", f"/api/audit?cursor={n}", None, "cursor", INT64_MAX),
        ("GET", f"/api/sessions?offset={n}", None, "offset", INT64_MAX),
        ("GET", f"/api/sessions/{t.session_id}?after={n}", None, "after", INT32_MAX),
        ("GET", f"/api/runs/{t.run_id}/events?after={n}", None, "after", INT32_MAX),
        ("POST", "/api/keys", {"name": "k", "rpm_limit": n}, "rpm_limit", INT32_MAX),
        ("POST", "/api/keys", {"name": "k", "tpm_limit": n}, "tpm_limit", INT32_MAX),
        ("PUT", f"/api/workspaces/{t.workspace_id}/limits", {"rpm_limit": n}, "rpm_limit", INT32_MAX),
        ("PUT", f"/api/workspaces/{t.workspace_id}/limits", {"tpm_limit": n}, "tpm_limit", INT32_MAX),
        ("POST", "/api/route/explain", {"prompt": "x", "max_tokens": n}, "max_tokens", INT32_MAX),
        ("POST", "/api/agents", {"name": "big", "tool_levels": {"echo": n}}, "tool_levels.echo", INT32_MAX),
    ]


@pytest.mark.parametrize("past", ["one more", "1e22"])
async def test_a_number_past_its_column_is_a_422_naming_the_field(targets: Targets, past: str) -> None:
    for i, (_, _, _, field, largest) in enumerate(_cases(targets, 0)):
        method, path, body, _, _ = _cases(targets, largest + 1 if past == "one more" else 10**22)[i]
        r = await targets.client.request(method, path, json=body)
        err = assert_envelope(r, 422, "validation_error")
        assert err["param"] == field and str(largest) in err["message"], (path, body, err)


async def test_the_largest_value_of_each_column_is_stored_and_read_back(targets: Targets) -> None:
    c = targets.client
    key = await c.post("/api/keys", json={"name": "k", "rpm_limit": INT32_MAX, "tpm_limit": INT32_MAX})
    limits = await c.put(f"/api/workspaces/{targets.workspace_id}/limits",
                         json={"rpm_limit": INT32_MAX, "tpm_limit": INT32_MAX})
    audit = await c.get(f"/api/audit?cursor={INT64_MAX}")
    sessions = await c.get(f"/api/sessions?offset={INT64_MAX}")
    messages = await c.get(f"/api/sessions/{targets.session_id}?after={INT32_MAX}")
    async with c.stream("GET", f"/api/runs/{targets.run_id}/events?after={INT32_MAX}") as events:
        tail = await events.aread()
    assert key.status_code == 201 and (key.json()["rpm_limit"], key.json()["tpm_limit"]) == (INT32_MAX, INT32_MAX)
    listed = next(k for k in (await c.get("/api/keys")).json() if k["id"] == key.json()["id"])
    assert listed["rpm_limit"] == listed["tpm_limit"] == INT32_MAX
    assert limits.status_code == 200 and limits.json() == {"rpm_limit": INT32_MAX, "tpm_limit": INT32_MAX,
                                                                  "max_fallback_cost_factor": None}
    assert audit.status_code == 200 and audit.json() == {"events": [], "next_cursor": None}  # nothing after it
    assert sessions.status_code == 200 and sessions.json() == []
    assert messages.status_code == 200 and messages.json()["messages"] == []
    assert events.status_code == 200 and b"event:" not in tail  # nothing after the last seq, cleanly


async def test_a_huge_last_event_id_header_follows_nothing_instead_of_failing(
        targets: Targets, caplog: pytest.LogCaptureFixture) -> None:
    async with targets.client.stream("GET", f"/api/runs/{targets.run_id}/events",
                                     headers={"last-event-id": str(10**22)}) as resp:
        body = await resp.aread()
    assert resp.status_code == 200 and b"event:" not in body
    # A stream cut by a driver error also reads as empty: only the log tells them apart.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    async with targets.client.stream("GET", f"/api/runs/{targets.run_id}/events",
                                     headers={"last-event-id": "1"}) as resp:
        replay = await resp.aread()
    assert b"event: run.completed" in replay  # the header still works within range


async def test_true_is_not_one_nor_is_5_5_or_a_string(targets: Targets) -> None:
    # 5.0 is 5 (JSON Schema's integer; test_api_edges pins it), a fraction is not a count.
    c, ws = targets.client, targets.workspace_id
    cases = [
        ("POST", "/api/keys", {"name": "k", "rpm_limit": True}, "rpm_limit"),
        ("POST", "/api/keys", {"name": "k", "tpm_limit": True}, "tpm_limit"),
        ("POST", "/api/keys", {"name": "k", "rpm_limit": 5.5}, "rpm_limit"),
        ("POST", "/api/keys", {"name": "k", "rpm_limit": "5"}, "rpm_limit"),
        ("PUT", f"/api/workspaces/{ws}/limits", {"rpm_limit": True}, "rpm_limit"),
        ("POST", "/api/route/explain", {"prompt": "x", "max_tokens": True}, "max_tokens"),
        ("POST", "/api/agents", {"name": "b", "max_steps": True}, "max_steps"),
        ("POST", "/api/agents", {"name": "b", "temperature": True}, "temperature"),
        ("POST", "/api/agents", {"name": "b", "tool_levels": {"echo": True}}, "tool_levels.echo"),
        ("POST", "/api/feedback", {"run_id": targets.run_id, "rating": True}, "rating"),
    ]
    for method, path, body, field in cases:
        r = await c.request(method, path, json=body)
        assert assert_envelope(r, 422, "validation_error")["param"] == field, (path, body)
    assert [k["name"] for k in (await c.get("/api/keys")).json()] == ["bootstrap-admin"]  # none was created
    assert (await c.get(f"/api/workspaces/{ws}/limits")).json() == {"rpm_limit": None, "tpm_limit": None,
                                                                   "max_fallback_cost_factor": None}
    assert [a["name"] for a in (await c.get("/api/agents")).json()] == ["assistant", "counter"]


async def test_the_cli_path_of_a_key_is_bounded_too(any_services: Services) -> None:
    from warden.errors import ValidationFailed

    ws = (await any_services.accounts.workspace_by_name("default")).id
    with pytest.raises(ValidationFailed, match="rpm_limit"):
        await any_services.accounts.create_key(ws, "cli", rpm_limit=INT32_MAX + 1)
    with pytest.raises(ValidationFailed, match="tpm_limit"):
        await any_services.accounts.create_key(ws, "cli", tpm_limit=0)


# --- the property: whatever number arrives, the reply is a success or a 4xx envelope ---------

_ODD_JSON = st.one_of(
    st.integers(), st.integers(min_value=-(2**80), max_value=2**80), st.sampled_from(
        [INT32_MAX, INT32_MAX + 1, INT64_MAX, INT64_MAX + 1, -INT64_MAX - 2, 10**22, 0, -1]),
    st.floats(), st.booleans(), st.none(), st.text(max_size=6),
)
_ODD_QUERY = st.one_of(st.integers(min_value=-(2**80), max_value=2**80).map(str),
                       st.sampled_from(["1e22", "1.5", "-0", " 7", "0x10", "NaN", "", "true"]),
                       st.text(alphabet="0123456789e+-.", max_size=25))
_BODY_FIELDS = [("POST", "/api/keys", "rpm_limit"), ("POST", "/api/keys", "tpm_limit"),
                ("PUT", "/limits", "rpm_limit"), ("PUT", "/limits", "tpm_limit"),
                ("PUT", "/api/budgets", "limit_usd"), ("PUT", "/api/budgets", "per_request_cap_usd"),
                ("POST", "/api/route/explain", "max_tokens"), ("POST", "/api/agents", "max_steps"),
                ("POST", "/api/agents", "temperature"), ("POST", "/api/feedback", "rating")]
_QUERY_PARAMS = [("/api/audit", "cursor"), ("/api/audit", "limit"), ("/api/sessions", "offset"),
                 ("/api/sessions", "limit"), ("/session", "after"), ("/events", "after"),
                 ("/api/approvals", "limit")]


def _body(t: Targets, path: str, field: str, value: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"/api/keys": {"name": "k"}, "/api/budgets": {"scope": "workspace", "limit_usd": 1},
                            "/api/route/explain": {"prompt": "x"}, "/api/agents": {"name": "p"},
                            "/api/feedback": {"run_id": t.run_id}}.get(path, {})
    return {**base, field: value}


def _assert_handled(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) >= {"type", "code", "message", "request_id"} and "Traceback" not in r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(_BODY_FIELDS), value=_ODD_JSON)
async def test_any_number_in_a_body_is_answered_never_a_500(targets: Targets, where: tuple[str, str, str],
                                                            value: Any) -> None:
    method, path, field = where
    url = f"/api/workspaces/{targets.workspace_id}/limits" if path == "/limits" else path
    # Raw bytes: NaN and Infinity too, which Python's json (FastAPI's parser) reads.
    raw = json.dumps(_body(targets, path, field, value), allow_nan=True)
    _assert_handled(await targets.client.request(method, url, content=raw,
                                                 headers={"content-type": "application/json"}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(_QUERY_PARAMS), value=_ODD_QUERY)
async def test_any_number_in_a_query_is_answered_never_a_500(targets: Targets, caplog: pytest.LogCaptureFixture,
                                                             where: tuple[str, str], value: str) -> None:
    caplog.clear()
    path, param = where
    url = {"/session": f"/api/sessions/{targets.session_id}",
           "/events": f"/api/runs/{targets.run_id}/events"}.get(path, path)
    async with targets.client.stream("GET", url, params={param: value}) as r:
        body = await r.aread()
    _assert_handled(httpx.Response(r.status_code, content=body))
    # Not a stream cut by an error after its 200 either (it would read as a short stream).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
