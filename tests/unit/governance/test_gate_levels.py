"""The gate's level and decision never allow more than the pure matrix + workspace
policy would for the level an admin (or, without one, the caller) gave the tool:
an admin override cannot be talked around by the caller's claim (property test)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.agents.policy import _STRICTNESS, LEVELS, MATRIX, TIERS, WorkspacePolicy, decide
from warden.errors import ValidationFailed
from warden.agents.secrets_mask import mask_arguments
from warden.governance.gate import GovernedCall, arguments_hash, call_hash, level_of

TOOLS = ("Bash", "Read", "Edit")
outcomes = st.sampled_from(("allow", "approve", "deny"))


@settings(max_examples=300, deadline=None)
@given(tier=st.sampled_from(TIERS), claim=st.one_of(st.none(), st.sampled_from(LEVELS)),
       overrides=st.dictionaries(st.sampled_from(TOOLS), st.sampled_from(LEVELS)),
       tool=st.sampled_from(TOOLS), by_tool=st.dictionaries(st.sampled_from(TOOLS), outcomes))
def test_the_verdict_is_never_looser_than_matrix_and_policy(tier: str, claim: int | None, overrides: dict[str, int],
                                                            tool: str, by_tool: dict[str, Any]) -> None:
    agent = SimpleNamespace(id="agt_x", tier=tier, tool_levels=overrides)
    level = level_of(agent, GovernedCall(tool, {}, claim, "api"))  # type: ignore[arg-type]
    assert level == overrides.get(tool, claim if claim is not None else 3)
    policy = WorkspacePolicy(tools=by_tool)
    got = decide(tier, level, policy, tool=tool, agent_id=agent.id)
    assert _STRICTNESS[got.outcome] >= _STRICTNESS[MATRIX[(tier, level)]]
    if tool in by_tool:
        assert _STRICTNESS[got.outcome] >= _STRICTNESS[by_tool[tool]]


@pytest.mark.parametrize("claim", [0, 5, -1, True])
def test_a_level_outside_1_to_4_is_refused(claim: Any) -> None:
    agent = SimpleNamespace(id="agt_x", tier="student", tool_levels={})
    with pytest.raises(ValidationFailed):
        level_of(agent, GovernedCall("Bash", {}, claim, "api"))  # type: ignore[arg-type]


def test_the_same_call_is_the_same_hash_whatever_the_key_order() -> None:
    assert arguments_hash({"a": 1, "b": [1, 2]}) == arguments_hash({"b": [1, 2], "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 2})
    h = arguments_hash({"a": 1})
    assert call_hash("agt_1", "Bash", h) != call_hash("agt_2", "Bash", h) != call_hash("agt_1", "Edit", h)


def test_secrets_are_masked_for_the_human() -> None:
    masked = mask_arguments({"command": "curl -H 'Authorization: Bearer abcdef123456' https://x.io/?token=zz",
                             "api_key": "k-123", "nested": [{"password": "p"}], "path": "/tmp/a"})
    text = str(masked)
    assert "abcdef123456" not in text and "k-123" not in text and "'p'" not in text and "zz" not in text
    assert masked["path"] == "/tmp/a"
