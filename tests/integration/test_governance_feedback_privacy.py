"""Feedback between members of one workspace: another member's message is simply not
found (its run is never named), and an agent's feedback summary shows a member everyone's
numbers but only their own comments and corrections; an admin sees them all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.support.governance import setup_echo

from tests.support.app import client_for
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def test_members_see_only_their_own_feedback_and_never_anothers_run(services: Services,
                                                                          up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = await services.accounts.workspace_by_name("default")
    alice = await services.accounts.create_key(ws.id, "alice", role="member")
    bob = await services.accounts.create_key(ws.id, "bob", role="member")
    up.enqueue(Behaviour(text="for alice"), Behaviour(text="for bob"))
    async with client_for(services) as admin, client_for(services, alice.key) as a, \
            client_for(services, bob.key) as b:
        out_a = (await a.post("/api/chat", json={"message": "hello"})).json()
        out_b = (await b.post("/api/chat", json={"message": "hi"})).json()
        await a.post("/api/feedback", json={"message_id": out_a["message"]["id"], "rating": "down",
                                            "comment": "alice private note", "correction": "Alice's fix."})
        await b.post("/api/feedback", json={"message_id": out_b["message"]["id"], "rating": "up",
                                            "comment": "bob private note"})
        prying = await b.post("/api/feedback", json={"message_id": out_a["message"]["id"], "rating": "down"})
        missing = await b.post("/api/feedback", json={"message_id": "msg_nope", "rating": "down"})
        seen_by_bob = await b.get("/api/agents/assistant/feedback")
        seen_by_admin = (await admin.get("/api/agents/assistant/feedback")).json()
    assert prying.status_code == 404 and prying.json()["error"]["code"] == "message_not_found"
    assert out_a["run_id"] not in prying.text
    assert prying.json()["error"]["message"].replace(out_a["message"]["id"], "msg_nope") == \
        missing.json()["error"]["message"]  # the same answer as for no such message
    bob_view = seen_by_bob.json()
    assert (bob_view["count"], bob_view["positive"], bob_view["negative"], bob_view["corrections"]) == (2, 1, 1, 1)
    assert [f["comment"] for f in bob_view["recent"]] == ["bob private note"]
    assert "alice private note" not in seen_by_bob.text and "Alice's fix." not in seen_by_bob.text
    assert sorted(f["comment"] for f in seen_by_admin["recent"]) == ["alice private note", "bob private note"]
