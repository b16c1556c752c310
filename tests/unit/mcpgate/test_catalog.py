"""What ``/mcp`` lists for an agent: levels from annotations and overrides, and never a
tool the pure decision (tier x level x workspace policy) denies; a listed tool's
stated decision is exactly that decision."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from mcp.types import Tool as McpToolInfo
from mcp.types import ToolAnnotations

from tests.support.properties import PROPERTIES
from warden.agents.policy import LEVELS, OUTCOMES, TIERS, WorkspacePolicy, decide
from warden.agents.tools.deps import ToolDeps
from warden.agents.tools.mcp import McpConnection, McpServerConfig
from warden.agents.tools.egress import EgressPolicy
from warden.mcpgate.catalog import catalog, listed_tools
from warden.mcpgate.pool import Upstream

DEPS = ToolDeps(db=None)  # type: ignore[arg-type] - the catalog never touches the database
READ = ToolAnnotations(read_only_hint=True)
WIPE = ToolAnnotations(destructive_hint=True)
TOOLS = [McpToolInfo(name="read", input_schema={"type": "object"}, annotations=READ),
         McpToolInfo(name="wipe", input_schema={"type": "object"}, annotations=WIPE),
         McpToolInfo(name="plain", input_schema={"type": "object"})]


def upstream(trusted: bool, tool_levels: dict[str, int] | None = None) -> tuple[McpServerConfig, Upstream]:
    config = McpServerConfig(name="fx", transport="stdio", command=sys.executable, trusted=trusted,
                             tool_levels=tool_levels or {})
    connection = McpConnection(config, egress=EgressPolicy(), stdio_allow=[], connect_timeout=1, call_timeout=1)
    return config, Upstream(connection, TOOLS)


def agent(tier: str, levels: dict[str, int] | None = None, tools: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(id="agt_1", workspace_id="ws", tier=tier, tool_levels=levels or {}, tools=tools or [])


def test_levels_from_annotations_trust_and_overrides() -> None:
    trusted = catalog(agent("autonomous"), [upstream(True)], DEPS, None)
    assert {n: t.level for n, t in trusted.items()} == {"fx__read": 1, "fx__wipe": 4, "fx__plain": 3}
    untrusted = catalog(agent("autonomous"), [upstream(False)], DEPS, None)
    assert untrusted["fx__read"].level == 3  # an untrusted server's readOnlyHint is not believed
    server_says = catalog(agent("autonomous"), [upstream(False, {"plain": 2})], DEPS, None)
    assert server_says["fx__plain"].level == 2
    admin_says = catalog(agent("autonomous", {"fx__plain": 1, "fx__wipe": 2}), [upstream(True, {"plain": 2})],
                         DEPS, None)
    assert admin_says["fx__plain"].level == 1 and admin_says["fx__wipe"].level == 2


def test_builtins_appear_under_the_warden_prefix() -> None:
    tools = catalog(agent("student", tools=["current_time", "http_request"]), [], DEPS, None)
    assert set(tools) == {"warden__current_time", "warden__http_request"}
    assert tools["warden__current_time"].level == 1 and tools["warden__current_time"].builtin is not None
    listed = {t.name: t for t in listed_tools(tools)}
    assert "warden__http_request" not in listed  # level 3: denied for a student, so hidden
    assert listed["warden__current_time"].description.startswith("[level 1 read, allowed]")


def test_listing_says_what_needs_approval() -> None:
    listed = {t.name: t for t in listed_tools(catalog(agent("intern"), [upstream(True)], DEPS, None))}
    assert set(listed) == {"fx__read", "fx__plain"}
    assert listed["fx__plain"].description.startswith("[level 3 mutate, needs approval]")
    assert listed["fx__plain"].meta == {"warden/level": 3, "warden/decision": "approve", "warden/server": "fx"}


outcomes = st.sampled_from(OUTCOMES)
names = st.sampled_from(["fx__read", "fx__wipe", "fx__plain", "warden__current_time"])
policies = st.one_of(st.none(), st.builds(
    WorkspacePolicy,
    cells=st.dictionaries(st.tuples(st.sampled_from(TIERS), st.sampled_from(LEVELS)), outcomes, max_size=4),
    levels=st.dictionaries(st.sampled_from(LEVELS), outcomes, max_size=3),
    tools=st.dictionaries(names, outcomes, max_size=3),
    agents=st.dictionaries(st.just("agt_1"), st.dictionaries(st.sampled_from(LEVELS), outcomes), max_size=1),
))


@PROPERTIES
@given(tier=st.sampled_from(TIERS), policy=policies, trusted=st.booleans(),
       overrides=st.dictionaries(names, st.sampled_from(LEVELS), max_size=3))
def test_never_lists_what_the_decision_denies(tier: str, policy: WorkspacePolicy | None, trusted: bool,
                                               overrides: dict[str, int]) -> None:
    who = agent(tier, overrides, tools=["current_time"])
    tools = catalog(who, [upstream(trusted)], DEPS, policy)
    assert set(tools) == {"fx__read", "fx__wipe", "fx__plain", "warden__current_time"}
    listed = {t.name: t for t in listed_tools(tools)}
    for name, tool in tools.items():
        truth = decide(tier, tool.level, policy, tool=name, agent_id="agt_1").outcome
        assert tool.outcome == truth
        assert (name in listed) == (truth != "deny")
        if name in overrides:
            assert tool.level == overrides[name]
        if name in listed:
            assert listed[name].meta["warden/decision"] == truth
