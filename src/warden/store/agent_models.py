"""Tables of the agent server: agents, chat sessions and messages, runs with
their events and tool calls. Every row belongs to exactly one workspace.

Deleting an agent deletes its sessions (and with them messages and runs): a
session without its agent could not be continued, and keeping orphans would
leak history nobody can reach through the API.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # hosted: Warden runs its loop; external: the loop runs elsewhere (Claude Code, an SDK
    # agent) and Warden governs and meters it through the keys bound to it. Immutable.
    kind: Mapped[str] = mapped_column(String(16), default="hosted", server_default="hosted")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    instructions: Mapped[str] = mapped_column(Text, default="")
    # {"model": "auto" | group | "provider/model", "fallbacks": [...]}
    model_policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    tools: Mapped[list[str]] = mapped_column(JSON)
    mcp_servers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Admin overrides of a tool's declared risk level: {"tool name": level}.
    tool_levels: Mapped[dict[str, int]] = mapped_column(JSON)
    max_steps: Mapped[int] = mapped_column(Integer, default=8)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    tier: Mapped[str] = mapped_column(String(16), default="student")
    # A manual tier change sticks until the next manual one (maturity leaves it alone).
    tier_sticky: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ChatSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        # The two listing queries: admins (whole workspace), members (own key).
        Index("ix_sessions_ws_activity", "workspace_id", "last_activity_at"),
        Index("ix_sessions_ws_key_activity", "workspace_id", "api_key_id", "last_activity_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    preview: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | tool
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Assistant tool calls as [{"id", "name", "arguments"}] (arguments: raw JSON text).
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Run(Base):
    """One agent turn: may span several model calls and tool calls, may pause."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_session_started", "session_id", "started_at"),
        Index("ix_runs_ws_agent_started", "workspace_id", "agent_id", "started_at"),
        # The start-up watchdog looks for stale running runs.
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
        # The sweep looks for active runs whose owner's lease ran out.
        Index("ix_runs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running|paused|completed|failed|cancelled
    # One entry per model call: {step, provider, model, usage, cost_usd, latency_ms, finish_reason}.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(24, 12), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(40), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # What a paused run needs to resume (pending tool calls, step number).
    resume_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    user_message_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The serving instance executing the run (or carrying out its decided actions) and
    # until when; renewed while it works, cleared when the run pauses or ends. Taken
    # over by compare-and-set once expired (agents/runs/recovery.py); ``takeovers``
    # counts that, so a run that kills every server it lands on ends failed.
    owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    takeovers: Mapped[int] = mapped_column(Integer, default=0)


class RunEvent(Base):
    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ToolCallRecord(Base):
    """One action: a tool call the model asked for, its governance decision and outcome."""

    __tablename__ = "tool_calls"
    __table_args__ = (Index("ix_tool_calls_run_step", "run_id", "step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(40), index=True)
    step: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)  # raw text: the model may send malformed JSON
    risk_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(16))  # allow | approve | deny
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # pending_approval | completed | failed | denied | timeout | cancelled
    status: Mapped[str] = mapped_column(String(24))
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
