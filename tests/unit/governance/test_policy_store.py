"""A workspace policy: any body the API accepts only tightens the matrix, survives
storage unchanged, and the store's cache follows changes (here and broadcast).

Property tests over the parsing; the store itself against a real SQLite file
migrated to head, its clock the real one (the TTL is set to 0 or an hour)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.support.properties import PROPERTIES
from warden.agents.policy import LEVELS, MATRIX, OUTCOMES, TIERS, decide
from warden.errors import ValidationFailed
from warden.governance.policy_store import TOPIC, PolicyBody, PolicyStore, parse_policy
from warden.state.base import FLUSH_ALL
from warden.store.db import Database
from warden.store.governance_models import GovernancePolicyRow
from warden.store.migrate import upgrade
from warden.store.models import AuditEvent, Workspace

STRICT = {"allow": 0, "approve": 1, "deny": 2}
tight = st.sampled_from(["approve", "deny"])
level_keys = st.sampled_from([1, 2, 3, 4]).flatmap(lambda n: st.sampled_from([n, str(n)]))
bodies = st.fixed_dictionaries({}, optional={
    "levels": st.dictionaries(level_keys, tight, max_size=4),
    "tools": st.dictionaries(st.sampled_from(["shell", "http_request", "x"]), tight, max_size=3),
    "cells": st.dictionaries(st.builds(lambda t, n: f"{t}:{n}", st.sampled_from(TIERS), st.sampled_from(LEVELS)),
                             tight, max_size=5),
    "agents": st.dictionaries(st.sampled_from(["agt_1", "agt_2"]), st.dictionaries(level_keys, tight, max_size=3),
                              max_size=2),
    "auto_promote": st.booleans(),
    "approvals": st.fixed_dictionaries({}, optional={"require_second_person": st.booleans()}),
})


@PROPERTIES
@given(bodies, st.sampled_from(TIERS), st.sampled_from(LEVELS), st.sampled_from([None, "shell", "x"]),
       st.sampled_from([None, "agt_1", "agt_2"]))
def test_an_accepted_policy_never_allows_what_the_matrix_denies(data: dict[str, Any], tier: str, level: int,
                                                                  tool: str | None, agent: str | None) -> None:
    body = parse_policy(data)
    policy = body.to_policy()
    d = decide(tier, level, policy, tool=tool, agent_id=agent)
    assert STRICT[d.outcome] >= STRICT[MATRIX[(tier, level)]]
    if policy is None:
        assert not any(data.get(k) for k in ("levels", "tools", "cells", "agents"))
        assert d == decide(tier, level, tool=tool, agent_id=agent)
    # What is stored reads back as the same body and so the same decisions.
    again = parse_policy(body.stored_json() | {"auto_promote": body.auto_promote})
    assert again == body and again.view() == body.view()
    assert decide(tier, level, again.to_policy(), tool=tool, agent_id=agent) == d
    assert body.view()["auto_promote"] is body.auto_promote
    assert list(body.view()["levels"]) == sorted(body.view()["levels"], key=int)


@PROPERTIES
@given(st.sampled_from(["levels", "tools", "cells", "agents"]), st.sampled_from(["allow", "maybe", 1]))
def test_a_loosening_or_unknown_outcome_is_refused(where: str, bad: Any) -> None:
    data = {"levels": {"2": bad}, "tools": {"shell": bad}, "cells": {"intern:2": bad},
            "agents": {"agt_1": {"2": bad}}}[where]
    with pytest.raises(ValidationFailed) as exc:
        parse_policy({where: data})
    where_bad = {"levels": "levels.2", "tools": "tools.shell", "cells": "cells.intern:2",
                 "agents": "agents.agt_1.2"}[where]
    assert exc.value.param == where_bad
    assert str(exc.value) == f"{where_bad}: overrides may only tighten the matrix: use 'approve' or 'deny'"


@pytest.mark.parametrize("data", [{"levels": {"5": "deny"}}, {"agents": {"a": {"0": "deny"}}},
                                  {"cells": {"boss:2": "deny"}}, {"cells": {"intern:x": "deny"}},
                                  {"cells": {"intern:9": "deny"}}, {"surprise": True},
                                  {"approvals": {"require_second_person": "yes"}}])
def test_out_of_range_keys_and_extra_fields_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as exc:
        parse_policy(data)
    assert exc.value.status == 422 and "tighten" not in str(exc.value)


def test_error_messages_word_for_word() -> None:
    with pytest.raises(ValidationFailed, match=r"risk level 5 must be 1-4"):
        parse_policy({"levels": {"5": "deny"}})
    with pytest.raises(ValidationFailed, match=r"cell 'boss:2' must be '<tier>:<level>', e.g. 'intern:2'"):
        parse_policy({"cells": {"boss:2": "deny"}})
    with pytest.raises(ValidationFailed) as exc:
        parse_policy(["not", "an", "object"])  # type: ignore[arg-type]
    assert (str(exc.value), exc.value.param) == (
        "policy: Input should be a valid dictionary or instance of PolicyBody", "policy")


def test_empty_overrides_mean_the_plain_matrix() -> None:
    assert PolicyBody(auto_promote=True).to_policy() is None
    p = parse_policy({"cells": {"supervised:3": "deny"}}).to_policy()
    assert p is not None and dict(p.cells) == {("supervised", 3): "deny"}
    assert all(o in OUTCOMES for o in p.cells.values())


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await upgrade(database)
    async with database.transaction() as s:
        s.add_all([Workspace(id="ws1", name="one"), Workspace(id="ws2", name="two")])
    yield database
    await database.close()


async def test_put_stores_audits_versions_and_broadcasts(db: Database) -> None:
    sent: list[tuple[str, str]] = []

    async def notify(topic: str, key: str) -> None:
        sent.append((topic, key))

    store = PolicyStore(db, cache_ttl=3600, notify=notify)
    empty = await store.get("ws1")
    assert (empty.version, empty.policy, empty.updated_by) == (0, None, None)
    first = await store.put("ws1", {"levels": {"4": "deny"}}, actor="key:admin")
    assert (first.version, first.updated_by) == (1, "key:admin") and sent == [(TOPIC, "ws1")]
    assert first.updated_at is not None and first.view()["updated_at"] == first.updated_at
    assert (await store.policy_for("ws1")) == first.policy
    second = await store.put("ws1", {"tools": {"shell": "approve"}, "auto_promote": True}, actor="key:b")
    assert second.version == 2 and second.view()["version"] == 2 and second.view()["auto_promote"] is True
    loaded = await store.get("ws1")  # put dropped the cached copy: this is the database's
    assert (loaded.version, loaded.body, loaded.updated_by) == (2, second.body, "key:b")
    assert loaded.view()["updated_at"] is not None and loaded.view()["updated_by"] == "key:b"
    assert PolicyStore(db).cache_ttl == 3.0  # the longest another instance's change can go unseen
    async with db.session() as s:
        row = await s.get(GovernancePolicyRow, "ws1")
        assert row is not None and row.auto_promote is True and row.policy["tools"] == {"shell": "approve"}
        events = (await s.execute(select(AuditEvent).where(AuditEvent.action == "governance.policy_update")
                                  .order_by(AuditEvent.seq))).scalars().all()
    assert [e.data["version"] for e in events] == [1, 2]
    assert [(e.target, e.actor, e.workspace_id) for e in events] == [("ws1", "key:admin", "ws1"),
                                                                     ("ws1", "key:b", "ws1")]
    assert events[1].data["before"]["levels"] == {"4": "deny"} and events[1].data["after"]["levels"] == {}
    with pytest.raises(ValidationFailed):
        await store.put("ws1", {"levels": {"4": "allow"}}, actor="key:b")
    assert (await store.get("ws1")).version == 2


async def test_the_cache_follows_changes_from_other_instances(db: Database) -> None:
    here, there = PolicyStore(db, cache_ttl=3600), PolicyStore(db, cache_ttl=3600)
    assert (await here.get("ws1")).version == 0
    await there.put("ws1", {"levels": {"3": "deny"}}, actor="key:a")
    assert (await here.get("ws1")).version == 0  # cached, until told
    here.on_message("other-topic", "ws1")
    assert (await here.get("ws1")).version == 0
    here.on_message(TOPIC, "ws2")
    assert (await here.get("ws1")).version == 0
    here.on_message(TOPIC, "ws1")
    assert (await here.get("ws1")).version == 1
    assert (await here.get("ws2")).version == 0
    await there.put("ws2", {"levels": {"1": "deny"}}, actor="key:a")
    await here.put("ws1", {"levels": {"3": "deny"}}, actor="key:a")  # drops its own ws1 copy only
    assert (await here.get("ws2")).version == 0
    here.on_message(TOPIC, "ws2")
    assert (await here.get("ws2")).version == 1
    await there.put("ws1", {"levels": {"2": "deny"}}, actor="key:a")
    here.on_message(FLUSH_ALL, "")  # the store reconnected: drop everything
    assert (await here.get("ws1")).version == 3
    await there.put("ws1", {}, actor="key:a")
    here.invalidate()
    assert (await here.get("ws1")).policy is None
    uncached = PolicyStore(db, cache_ttl=0)
    await uncached.get("ws1")
    await there.put("ws1", {"levels": {"1": "approve"}}, actor="key:a")
    assert (await uncached.get("ws1")).version == 5  # a TTL of 0 never serves a stale copy
