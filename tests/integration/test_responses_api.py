"""``/v1/responses`` and the stored responses over HTTP, in process: envelopes,
paging, store=false, streams, and an answer delivered when keeping it fails."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from tests.support.envelope import assert_envelope
from tests.support.golden import sse_events

from warden.services import Services
from warden.testing.upstream import DEFAULT_TEXT, UpstreamServer


@pytest.fixture
async def up(services: Services) -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        ws = (await services.accounts.workspace_by_name("default")).id
        await services.byok.create(ws, {"provider": "openai", "label": "sim", "api_key": "sk-sim-0123456789",
                                        "base_url": server.base_url, "models": [{"id": "gpt-4o-mini"}]},
                                   actor="test")
        yield server


async def create(client: httpx.AsyncClient, **body) -> httpx.Response:  # noqa: ANN003
    return await client.post("/v1/responses", json={"model": "openai/gpt-4o-mini", **body})


async def test_stored_response_routes(client: httpx.AsyncClient, up: UpstreamServer) -> None:
    first = await create(client, input="one two")
    assert first.status_code == 200 and first.headers["x-warden-cost-usd"] != "unknown"
    rid = first.json()["id"]
    second = (await create(client, input="three", previous_response_id=rid)).json()
    got = await client.get(f"/v1/responses/{second['id']}")
    assert got.json() == second
    page = (await client.get(f"/v1/responses/{second['id']}/input_items", params={"limit": 2})).json()
    assert page["object"] == "list" and page["has_more"] is True and len(page["data"]) == 2
    assert page["data"][0]["content"][0]["text"] == "three"  # newest first
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][1]["id"])
    rest = (await client.get(f"/v1/responses/{second['id']}/input_items",
                             params={"after": page["last_id"]})).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["one two"] and rest["has_more"] is False
    empty = (await client.get(f"/v1/responses/{rid}/input_items", params={"after": "msg_none"})).json()
    assert (empty["data"], empty["first_id"], empty["last_id"]) == ([], None, None)
    assert_envelope(await client.get(f"/v1/responses/{rid}/input_items", params={"limit": 0}), 422, "validation_error")
    deleted = await client.delete(f"/v1/responses/{rid}")
    assert deleted.json() == {"id": rid, "object": "response", "deleted": True}
    assert_envelope(await client.get(f"/v1/responses/{rid}"), 404, "response_not_found")
    assert_envelope(await client.delete(f"/v1/responses/{rid}"), 404, "response_not_found")
    assert_envelope(await create(client, input="x", previous_response_id=rid), 404, "previous_response_not_found")


async def test_refusals_before_any_upstream_call(client: httpx.AsyncClient, anon: httpx.AsyncClient,
                                                 up: UpstreamServer) -> None:
    err = assert_envelope(await create(client, input="x", tools=[{"type": "file_search"}]), 400, "unsupported_tool")
    assert "'file_search'" in err["message"]
    assert_envelope(await create(client, input=[{"type": "function_call", "name": "f"}]), 422, "validation_error")
    assert_envelope(await client.post("/v1/responses", content=b"{"), 400, "invalid_json")
    assert_envelope(await anon.post("/v1/responses", json={"model": "auto", "input": "x"}), 401, "invalid_api_key")
    assert_envelope(await anon.get("/v1/responses/resp_x"), 401, "invalid_api_key")
    assert up.requests == []


async def test_stream_over_http_is_kept(client: httpx.AsyncClient, up: UpstreamServer) -> None:
    r = await create(client, input="hi", stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert events[-1][0] == "response.completed"
    done = events[-1][1]["response"]
    assert (await client.get(f"/v1/responses/{done['id']}")).json()["output"] == done["output"]
    unkept = sse_events((await create(client, input="hi", stream=True, store=False)).content)[-1][1]["response"]
    assert_envelope(await client.get(f"/v1/responses/{unkept['id']}"), 404, "response_not_found")


async def test_answer_is_delivered_when_keeping_it_fails(client: httpx.AsyncClient, up: UpstreamServer,
                                                         services: Services,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    async with services.db.transaction() as s:
        await s.execute(text("DROP TABLE stored_responses"))  # the store breaks under the request
    with caplog.at_level(logging.ERROR, logger="warden.api.responses"):
        plain = await create(client, input="hi")
        streamed = sse_events((await create(client, input="hi", stream=True)).content)
    assert plain.status_code == 200 and plain.json()["output"][0]["content"][0]["text"] == DEFAULT_TEXT
    assert streamed[-1][0] == "response.completed"
    assert sum("could not store response" in r.message for r in caplog.records) == 2
