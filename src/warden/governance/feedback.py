"""Feedback on an agent's messages and runs, and on an external agent's governed
calls (``action_id``; no run): one per author and target (a second replaces the
first), normalised to a score in -1..1, kept with the provider, model and
complexity of the run's model calls so routing can learn from it later, and
counted toward the agent's maturity at the tier it has now, whatever its kind.

Within a workspace, members see what is theirs: feedback on another member's
message is "no message" (without naming that member's run), and an agent's
feedback summary shows a member the numbers of everyone's feedback but only
their own comments and corrections; an admin sees all of them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.runs import Runs
from warden.errors import Forbidden, NotFound, ValidationFailed
from warden.governance.gate import own_call
from warden.governance.maturity import Maturity, find_agent
from warden.store.agent_models import Agent, Message
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.governance_models import Feedback
from warden.tenancy.accounts import Principal

Rating = Literal["up", "down", 1, 2, 3, 4, 5]


TARGETS = ("message_id", "run_id", "action_id")  # action_id: an external agent's governed call


def _only(target: str) -> dict[str, Any]:
    return {"required": [target], "properties": {
        t: {"type": "string"} if t == target else {"type": "null"} for t in TARGETS}}


class FeedbackBody(BaseModel):
    # Exactly one target (``_one_target`` below), stated for the OpenAPI document too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [_only(t) for t in TARGETS]})

    message_id: str | None = Field(default=None, max_length=40)
    run_id: str | None = Field(default=None, max_length=40)
    action_id: str | None = Field(default=None, max_length=40)
    rating: Rating
    correction: str | None = Field(default=None, max_length=20_000)
    comment: str | None = Field(default=None, max_length=4_000)

    @field_validator("rating", mode="before")
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # True == 1 would pass as one star
            raise ValueError("must be 'up', 'down' or 1-5 stars, not true or false")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> FeedbackBody:
        if sum(getattr(self, t) is not None for t in TARGETS) != 1:
            raise ValueError("give exactly one of message_id, run_id or action_id")
        return self


def score_of(rating: str | int) -> float:
    """up/down -> +1/-1; 1..5 stars -> -1, -0.5, 0, 0.5, 1."""
    if rating == "up":
        return 1.0
    if rating == "down":
        return -1.0
    return (int(rating) - 3) / 2


CALL = "call:"  # the target of feedback on a governed call: "call:<action id>"


@dataclass(frozen=True, slots=True)
class _Target:
    agent_id: str
    run_id: str | None
    target: str
    steps: list[dict[str, Any]]  # the model calls rated: [{provider, model, complexity}]


def _view(f: Feedback) -> dict[str, Any]:
    action_id = f.target.removeprefix(CALL) if f.target.startswith(CALL) else None
    return {"id": f.id, "agent_id": f.agent_id, "run_id": f.run_id, "message_id": f.message_id,
            "action_id": action_id, "author": f.author, "rating": f.rating, "score": f.score,
            "correction": f.correction, "comment": f.comment, "tier": f.tier, "provider": f.provider,
            "model": f.model, "complexity": f.complexity, "created_at": f.created_at, "updated_at": f.updated_at}


class FeedbackService:
    def __init__(self, db: Database, runs: Runs, maturity: Maturity) -> None:
        self.db = db
        self.runs = runs
        self.maturity = maturity

    async def _call_target(self, principal: Principal, action_id: str) -> _Target:
        """A governed call of an external agent: it has no run and no model calls of its own;
        the caller must be allowed to see it (404 otherwise, as ``GET /api/governance/actions``)."""
        async with self.db.session() as s:
            row = await own_call(s, principal, action_id)
        return _Target(row.agent_id, None, f"{CALL}{row.id}", [])

    async def _run_target(self, principal: Principal, body: FeedbackBody) -> _Target:
        run_id = body.run_id
        if body.message_id is not None:
            async with self.db.session() as s:
                msg = await s.get(Message, body.message_id)
            if msg is None or msg.workspace_id != principal.workspace_id:
                raise NotFound(f"no message '{body.message_id[:80]}'", code="message_not_found")
            if msg.run_id is None:
                raise ValidationFailed("message_id: this message belongs to no agent run", param="message_id")
            run_id = msg.run_id
        assert run_id is not None
        try:
            run, _ = await self.runs.get(principal, run_id)  # 404 unless the caller may see the run
        except NotFound:
            if body.message_id is None:
                raise
            # The same answer as for a message that does not exist: never name another member's run.
            raise NotFound(f"no message '{body.message_id[:80]}'", code="message_not_found") from None
        steps = [{"provider": st.get("provider"), "model": st.get("model"), "complexity": st.get("complexity")}
                 for st in run.steps or []]
        return _Target(run.agent_id, run.id, body.message_id or f"run:{run.id}", steps)

    async def submit(self, principal: Principal, body: FeedbackBody) -> tuple[dict[str, Any], bool]:
        """Record (or replace) the caller's feedback. Returns (view, replaced)."""
        t = (await self._call_target(principal, body.action_id) if body.action_id is not None
             else await self._run_target(principal, body))
        if principal.agent_id is not None and principal.agent_id == t.agent_id:
            # An agent's own key lives in the agent's environment: feedback from it would let
            # the agent rate itself toward promotion.
            raise Forbidden("an agent's own key cannot rate its own actions", code="own_agent")
        steps, target = t.steps, t.target
        last = steps[-1] if steps else {}
        values = dict(rating=str(body.rating), score=score_of(body.rating), correction=body.correction or None,
                      comment=body.comment, provider=last.get("provider"), model=last.get("model"),
                      complexity=last.get("complexity"), steps=steps, updated_at=utcnow())

        async def tx(s: AsyncSession) -> tuple[Feedback, bool]:
            agent = await s.get(Agent, t.agent_id)
            if agent is None:
                raise NotFound("the agent no longer exists", code="agent_not_found")
            row = (await s.execute(select(Feedback).where(
                Feedback.workspace_id == principal.workspace_id, Feedback.author == principal.key_id,
                Feedback.target == target))).scalars().first()
            replaced = row is not None
            if row is None:
                row = Feedback(id=new_id("fb"), workspace_id=principal.workspace_id, agent_id=agent.id,
                               run_id=t.run_id, message_id=body.message_id, target=target, author=principal.key_id,
                               tier=agent.tier, created_at=utcnow(), **values)
                s.add(row)
            else:
                for k, v in values.items():
                    setattr(row, k, v)
            await s.flush()
            await self.maturity.reconsider(s, agent)
            return row, replaced

        try:
            row, replaced = await self.db.run_tx(tx)
        except IntegrityError:  # the same author's first feedback landed at the same moment: replace it
            row, replaced = await self.db.run_tx(tx)
        return _view(row), replaced

    async def summary(self, principal: Principal, agent_ref: str, *, recent: int = 20) -> dict[str, Any]:
        """Counts and scores of all the agent's feedback; in ``recent``, an admin sees
        everyone's entries, a member only their own."""
        async with self.db.session() as s:
            agent = await find_agent(s, principal.workspace_id, agent_ref)
            rows = list((await s.execute(select(Feedback).where(Feedback.agent_id == agent.id)
                                         .order_by(Feedback.updated_at.desc()))).scalars())
        shown = rows if principal.is_admin else [f for f in rows if f.author == principal.key_id]
        by_tier: dict[str, list[Feedback]] = defaultdict(list)
        by_model: dict[tuple[Any, Any, Any], list[Feedback]] = defaultdict(list)
        for f in rows:
            by_tier[f.tier].append(f)
            by_model[(f.provider, f.model, f.complexity)].append(f)
        return {
            "agent_id": agent.id, **_stats(rows),
            "by_tier": {t: _stats(fs) for t, fs in by_tier.items()},
            "by_model": [{"provider": p, "model": m, "complexity": c, **_stats(fs)}
                         for (p, m, c), fs in sorted(by_model.items(), key=lambda kv: -len(kv[1]))],
            "recent": [_view(f) for f in shown[:recent]],
        }


def _stats(rows: list[Feedback]) -> dict[str, Any]:
    n = len(rows)
    return {"count": n, "score_sum": sum(f.score for f in rows),
            "mean_score": round(sum(f.score for f in rows) / n, 4) if n else None,
            "positive": sum(1 for f in rows if f.score > 0), "negative": sum(1 for f in rows if f.score < 0),
            "corrections": sum(1 for f in rows if f.correction)}
