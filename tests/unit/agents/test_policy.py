"""The governance matrix, cell by cell, and workspace overrides that only tighten."""

from __future__ import annotations

import pytest

from warden.agents.policy import MATRIX, Decision, WorkspacePolicy, decide

EXPECTED = {
    1: {"student": "allow", "intern": "allow", "supervised": "allow", "autonomous": "allow"},
    2: {"student": "approve", "intern": "allow", "supervised": "allow", "autonomous": "allow"},
    3: {"student": "deny", "intern": "approve", "supervised": "allow", "autonomous": "allow"},
    4: {"student": "deny", "intern": "deny", "supervised": "approve", "autonomous": "allow"},
}
CELLS = [(tier, level, outcome) for level, row in EXPECTED.items() for tier, outcome in row.items()]


@pytest.mark.parametrize(("tier", "level", "outcome"), CELLS)
def test_every_cell_of_the_matrix(tier: str, level: int, outcome: str) -> None:
    d = decide(tier, level, tool="t")
    assert d.outcome == outcome
    assert d.rule == f"matrix:{tier}:{level}"
    assert tier in d.reason and "'t'" in d.reason


def test_matrix_table_has_exactly_sixteen_cells() -> None:
    assert len(MATRIX) == 16


def test_reason_without_tool_names_the_level() -> None:
    assert decide("intern", 3).reason == "a level 3 (mutate) action needs a human's approval for an intern agent"


@pytest.mark.parametrize(("tier", "level", "rule"), [("boss", 1, "invalid:tier"), ("student", 0, "invalid:level"),
                                                      ("autonomous", 5, "invalid:level")])
def test_unknown_tier_or_level_fails_closed(tier: str, level: int, rule: str) -> None:
    d = decide(tier, level)
    assert d == Decision("deny", d.reason, rule)


def test_level_override_tightens_every_tier() -> None:
    policy = WorkspacePolicy(levels={4: "approve"})
    assert decide("autonomous", 4, policy).outcome == "approve"
    assert decide("autonomous", 4, policy).rule == "policy:level:4"
    assert "workspace policy" in decide("autonomous", 4, policy).reason
    # Looser than the matrix: ignored, the matrix decides.
    assert decide("student", 4, policy) == decide("student", 4)


def test_tool_override_denies_that_tool_only() -> None:
    policy = WorkspacePolicy(tools={"http_request": "deny"})
    assert decide("autonomous", 3, policy, tool="http_request").rule == "policy:tool:http_request"
    assert decide("autonomous", 3, policy, tool="http_request").outcome == "deny"
    assert decide("autonomous", 3, policy, tool="other").outcome == "allow"
    assert decide("autonomous", 3, policy).outcome == "allow"


def test_agent_override_applies_to_that_agent_and_level() -> None:
    policy = WorkspacePolicy(agents={"agt_1": {2: "approve"}})
    assert decide("supervised", 2, policy, agent_id="agt_1").outcome == "approve"
    assert decide("supervised", 2, policy, agent_id="agt_1").rule == "policy:agent:agt_1:2"
    assert decide("supervised", 3, policy, agent_id="agt_1").outcome == "allow"
    assert decide("supervised", 2, policy, agent_id="agt_2").outcome == "allow"


def test_cell_override_and_the_strictest_rule_wins() -> None:
    policy = WorkspacePolicy(cells={("intern", 2): "approve"}, levels={2: "deny"})
    d = decide("intern", 2, policy)
    assert (d.outcome, d.rule) == ("deny", "policy:level:2")
    assert decide("intern", 2, WorkspacePolicy(cells={("intern", 2): "approve"})).rule == "policy:cell:intern:2"


def test_overrides_never_loosen() -> None:
    everything_allowed = WorkspacePolicy(cells={("student", 3): "allow"}, levels={3: "allow"},
                                         tools={"x": "allow"}, agents={"a": {3: "allow"}})
    assert decide("student", 3, everything_allowed, tool="x", agent_id="a") == decide("student", 3, tool="x")


def test_bad_outcome_in_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="tools"):
        WorkspacePolicy(tools={"x": "maybe"})  # type: ignore[dict-item]
