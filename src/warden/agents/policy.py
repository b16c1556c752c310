"""The governance decision: may an agent of this tier take an action of this risk level?

Pure (no I/O, no awaits) and cheap: a dict lookup per applicable rule, so it can
sit on every tool call. The base is the tier x risk matrix:

    level \\ tier   student  intern   supervised  autonomous
    1 read          allow    allow    allow       allow
    2 draft         approve  allow    allow       allow
    3 mutate        deny     approve  allow       allow
    4 critical      deny     deny     approve     allow

A :class:`WorkspacePolicy` may *tighten* cells (per matrix cell, per level, per
tool, per agent and level). Overrides only ever raise the outcome on the scale
allow < approve < deny: an override looser than the matrix is ignored, so no
workspace setting can let an agent do more than its tier allows. Unknown tiers
or levels fail closed (deny).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["allow", "approve", "deny"]
Tier = Literal["student", "intern", "supervised", "autonomous"]

TIERS: tuple[Tier, ...] = ("student", "intern", "supervised", "autonomous")
LEVELS: tuple[int, ...] = (1, 2, 3, 4)
OUTCOMES: tuple[Outcome, ...] = ("allow", "approve", "deny")
LEVEL_NAMES = {1: "read", 2: "draft", 3: "mutate", 4: "critical"}
_STRICTNESS: dict[str, int] = {"allow": 0, "approve": 1, "deny": 2}

MATRIX: dict[tuple[str, int], Outcome] = {
    ("student", 1): "allow", ("intern", 1): "allow", ("supervised", 1): "allow", ("autonomous", 1): "allow",
    ("student", 2): "approve", ("intern", 2): "allow", ("supervised", 2): "allow", ("autonomous", 2): "allow",
    ("student", 3): "deny", ("intern", 3): "approve", ("supervised", 3): "allow", ("autonomous", 3): "allow",
    ("student", 4): "deny", ("intern", 4): "deny", ("supervised", 4): "approve", ("autonomous", 4): "allow",
}


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str
    rule: str  # machine-readable: which rule decided, e.g. "matrix:intern:3", "policy:tool:http_request"


@dataclass(frozen=True, slots=True)
class WorkspacePolicy:
    """Workspace overrides; each may only tighten the matrix (see the module doc)."""

    cells: Mapping[tuple[str, int], Outcome] = field(default_factory=dict)  # (tier, level)
    levels: Mapping[int, Outcome] = field(default_factory=dict)  # "level 4 always needs approval"
    tools: Mapping[str, Outcome] = field(default_factory=dict)  # "tool X denied"
    agents: Mapping[str, Mapping[int, Outcome]] = field(default_factory=dict)  # agent id -> level -> outcome

    def __post_init__(self) -> None:
        for where, values in (("cells", self.cells.values()), ("levels", self.levels.values()),
                              ("tools", self.tools.values()),
                              ("agents", [o for m in self.agents.values() for o in m.values()])):
            for outcome in values:
                if outcome not in _STRICTNESS:
                    raise ValueError(f"{where}: outcome must be one of allow, approve, deny")


def decide(tier: str, level: int, policy: WorkspacePolicy | None = None, *,
           tool: str | None = None, agent_id: str | None = None) -> Decision:
    """Allow, ask a human (approve) or deny one action; with the reason and the deciding rule."""
    base = MATRIX.get((tier, level))
    if base is None:
        if tier not in TIERS:
            return Decision("deny", f"unknown maturity tier '{tier}'", "invalid:tier")
        return Decision("deny", f"unknown risk level {level!r}", "invalid:level")
    outcome: Outcome = base
    rule = f"matrix:{tier}:{level}"
    if policy is not None:
        for candidate, candidate_rule in _overrides(policy, tier, level, tool, agent_id):
            if _STRICTNESS[candidate] > _STRICTNESS[outcome]:
                outcome, rule = candidate, candidate_rule
    return Decision(outcome, _reason(outcome, tier, level, rule, tool), rule)


def _overrides(policy: WorkspacePolicy, tier: str, level: int, tool: str | None,
               agent_id: str | None) -> list[tuple[Outcome, str]]:
    found: list[tuple[Outcome, str]] = []
    if (cell := policy.cells.get((tier, level))) is not None:
        found.append((cell, f"policy:cell:{tier}:{level}"))
    if (by_level := policy.levels.get(level)) is not None:
        found.append((by_level, f"policy:level:{level}"))
    if tool is not None and (by_tool := policy.tools.get(tool)) is not None:
        found.append((by_tool, f"policy:tool:{tool}"))
    per_agent = policy.agents.get(agent_id) if agent_id is not None else None
    if per_agent is not None and (by_agent := per_agent.get(level)) is not None:
        found.append((by_agent, f"policy:agent:{agent_id}:{level}"))
    return found


_VERB = {"allow": "is allowed", "approve": "needs a human's approval", "deny": "is denied"}


def _reason(outcome: Outcome, tier: str, level: int, rule: str, tool: str | None) -> str:
    action = f"'{tool}' (level {level}, {LEVEL_NAMES[level]})" if tool else f"a level {level} ({LEVEL_NAMES[level]}) action"
    if rule.startswith("matrix:"):
        article = "an" if tier[0] in "aeiou" else "a"
        return f"{action} {_VERB[outcome]} for {article} {tier} agent"
    return f"{action} {_VERB[outcome]} by workspace policy ({rule.removeprefix('policy:')})"
