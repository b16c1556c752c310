"""Properties of the governance decision: total, deterministic, never looser than
the matrix, and exactly the strictest applicable rule (first one on a tie)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import PROPERTIES
from warden.agents.policy import LEVELS, MATRIX, OUTCOMES, TIERS, Decision, WorkspacePolicy, decide

STRICT = {"allow": 0, "approve": 1, "deny": 2}
tiers = st.sampled_from(TIERS)
levels = st.sampled_from(LEVELS)
outcomes = st.sampled_from(OUTCOMES)
tools = st.sampled_from(["http_request", "shell", "read_file"])
agents = st.sampled_from(["agt_1", "agt_2"])
policies = st.builds(
    WorkspacePolicy,
    cells=st.dictionaries(st.tuples(tiers, levels), outcomes, max_size=6),
    levels=st.dictionaries(levels, outcomes, max_size=4),
    tools=st.dictionaries(tools, outcomes, max_size=3),
    agents=st.dictionaries(agents, st.dictionaries(levels, outcomes, max_size=4), max_size=2),
)


def oracle(tier: str, level: int, p: WorkspacePolicy | None, tool: str | None,
           agent: str | None) -> tuple[str, str]:
    """The rule, written out: every applicable rule in order, the strictest wins, the first on a tie."""
    found = [(MATRIX[(tier, level)], f"matrix:{tier}:{level}")]
    if p is not None:
        if (tier, level) in p.cells:
            found.append((p.cells[(tier, level)], f"policy:cell:{tier}:{level}"))
        if level in p.levels:
            found.append((p.levels[level], f"policy:level:{level}"))
        if tool is not None and tool in p.tools:
            found.append((p.tools[tool], f"policy:tool:{tool}"))
        if agent is not None and level in p.agents.get(agent, {}):
            found.append((p.agents[agent][level], f"policy:agent:{agent}:{level}"))
    best = max(STRICT[o] for o, _ in found)
    return next((o, r) for o, r in found if STRICT[o] == best)


@PROPERTIES
@given(tiers, levels, st.none() | policies, st.none() | tools, st.none() | agents)
def test_the_strictest_applicable_rule_decides(tier: str, level: int, policy: WorkspacePolicy | None,
                                               tool: str | None, agent: str | None) -> None:
    d = decide(tier, level, policy, tool=tool, agent_id=agent)
    assert (d.outcome, d.rule) == oracle(tier, level, policy, tool, agent)
    assert d == decide(tier, level, policy, tool=tool, agent_id=agent)  # deterministic
    assert STRICT[d.outcome] >= STRICT[MATRIX[(tier, level)]]  # a policy never loosens the matrix
    if MATRIX[(tier, level)] == "deny":
        assert d.outcome == "deny"
    if d.rule.startswith("policy:"):
        assert d.reason.endswith(f"by workspace policy ({d.rule.removeprefix('policy:')})")
    else:
        assert d.reason.endswith("agent") and f" {tier} agent" in d.reason
    if tool is not None:
        assert d.reason.startswith(f"'{tool}' (level {level}, ")


@PROPERTIES
@given(tiers, levels, policies, policies, st.none() | tools, st.none() | agents)
def test_more_overrides_never_loosen(tier: str, level: int, a: WorkspacePolicy, b: WorkspacePolicy,
                                     tool: str | None, agent: str | None) -> None:
    """Merging b's overrides into a (b wins per key only when stricter) never lowers a's outcome."""
    def merge(x: dict, y: dict) -> dict:
        return {k: max((v for v in (x.get(k), y.get(k)) if v is not None), key=STRICT.__getitem__)
                for k in {*x, *y}}
    both = WorkspacePolicy(
        cells=merge(dict(a.cells), dict(b.cells)), levels=merge(dict(a.levels), dict(b.levels)),
        tools=merge(dict(a.tools), dict(b.tools)),
        agents={k: merge(dict(a.agents.get(k, {})), dict(b.agents.get(k, {}))) for k in {*a.agents, *b.agents}})
    before = decide(tier, level, a, tool=tool, agent_id=agent)
    after = decide(tier, level, both, tool=tool, agent_id=agent)
    assert STRICT[after.outcome] >= STRICT[before.outcome]


@PROPERTIES
@given(st.text(max_size=12) | tiers, st.integers(-3, 8) | levels, st.none() | policies)
def test_total_and_unknown_inputs_fail_closed(tier: str, level: int, policy: WorkspacePolicy | None) -> None:
    d = decide(tier, level, policy)
    assert isinstance(d, Decision) and d.outcome in OUTCOMES
    if tier not in TIERS:
        assert (d.outcome, d.rule, d.reason) == ("deny", "invalid:tier", f"unknown maturity tier '{tier}'")
    elif level not in LEVELS:
        assert (d.outcome, d.rule, d.reason) == ("deny", "invalid:level", f"unknown risk level {level!r}")


@PROPERTIES
@given(st.sampled_from(["cells", "levels", "tools", "agents"]), st.text(max_size=8))
def test_an_outcome_outside_the_scale_is_refused(where: str, bad: str) -> None:
    if bad in STRICT:
        return
    value = {"cells": {("student", 1): bad}, "levels": {1: bad}, "tools": {"t": bad},
             "agents": {"a": {1: bad}}}[where]
    try:
        WorkspacePolicy(**{where: value})
    except ValueError as exc:
        assert str(exc) == f"{where}: outcome must be one of allow, approve, deny"
    else:
        raise AssertionError("accepted an outcome outside allow < approve < deny")


def test_reasons_word_for_word() -> None:
    assert decide("autonomous", 4).reason == "a level 4 (critical) action is allowed for an autonomous agent"
    assert decide("student", 2, tool="shell").reason == \
        "'shell' (level 2, draft) needs a human's approval for a student agent"
    assert decide("supervised", 1, WorkspacePolicy(tools={"shell": "deny"}), tool="shell").reason == \
        "'shell' (level 1, read) is denied by workspace policy (tool:shell)"
    assert decide("intern", 3, WorkspacePolicy(agents={"a": {3: "deny"}}), agent_id="a").reason == \
        "a level 3 (mutate) action is denied by workspace policy (agent:a:3)"
