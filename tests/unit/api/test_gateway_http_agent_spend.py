"""A key bound to an agent spends as that agent (``gateway_http.call_context``): over any
sequence of calls by keys bound to agent a, to agent b or to none, each agent's budget
admits exactly as many of its own keys' calls as it can pay for, whichever of its keys
makes them, and never refuses (or charges) a call of another agent's key or an unbound one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from tests.support.properties import FEW
from tests.support.state import FakeClock
from warden.api.gateway_http import call_context
from warden.errors import BudgetExceeded
from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.deployment import Deployment
from warden.gateway.limits import Budget, Limiter, WorkspaceLimits
from warden.gateway.routing import PlanStep, RoutePlan
from warden.gateway.types import ChatRequest, Message, TextPart, Usage
from warden.state import MemoryState
from warden.state.base import to_pico
from warden.tenancy.accounts import Principal

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
MAX_TOKENS = 100
DEPLOYMENT = Deployment.build("openai", "m", "cred1", catalog=get_catalog(),
                              overrides=ModelOverride(input_price=Decimal(0), output_price=Decimal(10)))
CALL_COST = Decimal(10) * MAX_TOKENS / 1_000_000  # the prompt is free: the hold is the whole cost
KEYS = {"key_a1": "agt_a", "key_a2": "agt_a", "key_b": "agt_b", "key_none": None}


def _principal(key_id: str) -> Principal:
    return Principal("ws1", "default", key_id, "member", agent_id=KEYS[key_id])


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})


def test_the_call_context_carries_the_keys_agent() -> None:
    for key_id, agent_id in KEYS.items():
        ctx = call_context(_request(), _principal(key_id), None)
        assert (ctx.workspace_id, ctx.api_key_id, ctx.agent_id) == ("ws1", key_id, agent_id)


@FEW
@given(st.lists(st.sampled_from(sorted(KEYS)), max_size=14), st.integers(0, 5), st.integers(0, 5))
async def test_an_agents_budget_is_spent_by_its_keys_alone(callers: list[str], a_calls: int,
                                                           b_calls: int) -> None:
    state = MemoryState(clock=FakeClock())
    budgets = {"agt_a": Budget("agent", "agt_a", "total", CALL_COST * a_calls),
               "agt_b": Budget("agent", "agt_b", "total", CALL_COST * b_calls)}

    async def source(workspace_id: str) -> WorkspaceLimits:
        return WorkspaceLimits(tuple(budgets.values()))

    limiter = Limiter(state, source, default_output_tokens=MAX_TOKENS, now=lambda: NOW)
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=MAX_TOKENS)
    plan = RoutePlan("openai/m", "explicit", None, None, [PlanStep(DEPLOYMENT, 1.0)], [])  # type: ignore[arg-type]
    admitted: list[str] = []
    for key_id in callers:
        ctx = call_context(_request(), _principal(key_id), None)
        try:
            admission, _ = await limiter.admit(req, ctx, plan)
        except BudgetExceeded as exc:
            assert KEYS[key_id] is not None and f"agent '{KEYS[key_id]}'" in exc.message
            continue
        await admission.settle(CALL_COST, Usage(1, MAX_TOKENS))
        admitted.append(key_id)

    # Each agent's keys get their agent's first calls, in order, up to what its budget pays for.
    for agent, room in (("agt_a", a_calls), ("agt_b", b_calls)):
        own = [k for k in callers if KEYS[k] == agent]
        assert [k for k in admitted if KEYS[k] == agent] == own[:room]
        spent = (await state.usage(budgets[agent].counter("ws1", NOW).key)).spent_pico
        assert spent == to_pico(CALL_COST) * min(len(own), room)
    assert [k for k in admitted if KEYS[k] is None] == [k for k in callers if KEYS[k] is None]
