"""Tables of governance: the workspace policy, approvals of paused actions,
maturity counters per agent and tier, tier proposals, and feedback.

Every row belongs to exactly one workspace. Maturity evidence and feedback
reference runs by id without a foreign key: deleting a session must not erase
the evidence an agent's tier rests on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class GovernancePolicyRow(Base):
    """A workspace's overrides of the tier x level matrix (tighten only), as JSON."""

    __tablename__ = "governance_policies"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    auto_promote: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Approval(Base):
    """A paused action waiting for (or settled by) a human."""

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_ws_status_requested", "workspace_id", "status", "requested_at"),
        Index("ix_approvals_status_expires", "status", "expires_at"),  # the expiry sweep
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # A hosted run's action names its run, session and tool call; an external agent's
    # governed call (source != "run") has none and is found by ``call_hash`` instead.
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True, nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    source: Mapped[str] = mapped_column(String(24), default="run", server_default="run")
    call_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # sha256(agent, tool, args)
    # An approved external call is allowed once: the retry that sets this (conditionally) runs it.
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    agent_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # who started the run
    tool: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)
    risk_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected | expired
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The decision reached the run (the tool ran or the refusal was given); a
    # decision whose instance died before that is applied by the next sweep.
    applied: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentMaturity(Base):
    """Outcome counters of one agent at one tier (feedback is summed from its own table)."""

    __tablename__ = "agent_maturity"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(40))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    approvals_asked: Mapped[int] = mapped_column(Integer, default=0)
    approvals_rejected: Mapped[int] = mapped_column(Integer, default=0)
    # Consecutive failed runs or rejected actions; a clean run resets it.
    streak: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TierProposal(Base):
    """A promotion the evidence supports, waiting for an admin (or declined by one)."""

    __tablename__ = "tier_proposals"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(40))
    from_tier: Mapped[str] = mapped_column(String(16))
    to_tier: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # pending | declined
    runs_at: Mapped[int] = mapped_column(Integer)  # runs at from_tier when proposed / declined
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(80), nullable=True)


class Feedback(Base):
    """One author's rating of one message, run or governed call (a second one replaces the first).

    Kept with the provider/model and complexity of the run's model calls so
    routing can learn from it later."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("workspace_id", "author", "target"),
        Index("ix_feedback_agent_tier", "agent_id", "tier"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)  # None: on a governed call
    message_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    target: Mapped[str] = mapped_column(String(48))  # the message id, "run:<run id>" or "call:<action id>"
    author: Mapped[str] = mapped_column(String(40))  # API key id
    rating: Mapped[str] = mapped_column(String(8))  # up | down | 1..5
    score: Mapped[float] = mapped_column(Float)  # normalised to -1..1
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    tier: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(40), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    complexity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{provider, model, complexity}]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
