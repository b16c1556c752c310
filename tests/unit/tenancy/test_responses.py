"""Stored responses: per workspace, expiring, continued and paged, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from warden.errors import NotFound
from warden.services import Services
from warden.store.base import utcnow
from warden.store.response_models import StoredResponse
from warden.tenancy.responses import StoredResponses


def response(rid: str, *output: dict) -> dict:
    return {"id": rid, "object": "response", "output": list(output)}


def item(n: int) -> dict:
    return {"type": "message", "id": f"msg_{n}", "role": "user", "content": f"m{n}"}


@pytest.fixture
async def ws(any_services: Services) -> tuple[StoredResponses, str, str]:
    acme = await any_services.accounts.create_workspace("acme")
    default = await any_services.accounts.workspace_by_name("default")
    return StoredResponses(any_services.db, ttl_s=60), default.id, acme.id


async def test_save_get_continue_and_page(ws) -> None:  # noqa: ANN001
    store, mine, _ = ws
    answer = {"type": "message", "id": "msg_out", "role": "assistant", "content": []}
    hosted = {"type": "web_search_call", "id": "ws_1"}
    await store.save(mine, response("resp_1", answer, hosted), history=[item(0)], input_items=[item(1), item(2)])
    assert (await store.get(mine, "resp_1"))["output"] == [answer, hosted]
    # A follow-up continues from everything before and the model's own items.
    assert await store.conversation(mine, "resp_1") == [item(0), item(1), item(2), answer]
    page, more = await store.input_items(mine, "resp_1", limit=2)
    assert [i["id"] for i in page] == ["msg_2", "msg_1"] and more
    page, more = await store.input_items(mine, "resp_1", after="msg_1", limit=2)
    assert [i["id"] for i in page] == ["msg_0"] and not more
    page, _ = await store.input_items(mine, "resp_1", order="asc", after="msg_0")
    assert [i["id"] for i in page] == ["msg_1", "msg_2"]
    assert (await store.input_items(mine, "resp_1", after="msg_unknown")) == ([], False)


async def test_never_across_workspaces_and_delete(ws) -> None:  # noqa: ANN001
    store, mine, theirs = ws
    await store.save(mine, response("resp_2"), history=[], input_items=[item(1)])
    for read in (store.get(theirs, "resp_2"), store.input_items(theirs, "resp_2"), store.delete(theirs, "resp_2")):
        with pytest.raises(NotFound) as exc:
            await read
        assert exc.value.code == "response_not_found"
    with pytest.raises(NotFound) as exc:
        await store.conversation(theirs, "resp_2")
    assert (exc.value.code, exc.value.param) == ("previous_response_not_found", "previous_response_id")
    await store.delete(mine, "resp_2")
    with pytest.raises(NotFound):
        await store.get(mine, "resp_2")


async def test_expired_responses_are_hidden_then_purged(ws, any_services: Services) -> None:  # noqa: ANN001
    store, mine, _ = ws
    await store.save(mine, response("resp_old"), history=[], input_items=[])
    async with any_services.db.transaction() as s:
        await s.execute(update(StoredResponse).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(NotFound):
        await store.get(mine, "resp_old")  # hidden at once
    store._purged = -1e9  # the once-a-minute purge is due: the next write runs it
    await store.save(mine, response("resp_new"), history=[], input_items=[])
    async with any_services.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(StoredResponse)) == 1
    assert await store.purge_expired() == 0
