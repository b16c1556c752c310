"""The governed calls of external agents (issue 17): one row per tool call an agent
that Warden does not run asked about, with the decision, the approval that held it,
and its outcome. The arguments and result are kept as hashes only: a row never
holds an agent's secrets, and the audit event of the call names the same hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow

CALL_STATUSES = ("allowed", "denied", "held", "approved", "rejected", "expired", "completed", "failed",
                 "interrupted")  # interrupted: the client left mid-call (it may have run)


class GovernedCallRow(Base):
    __tablename__ = "governed_calls"
    __table_args__ = (
        Index("ix_governed_calls_ws_agent_created", "workspace_id", "agent_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    source: Mapped[str] = mapped_column(String(24))
    tool: Mapped[str] = mapped_column(String(200))
    arguments_hash: Mapped[str] = mapped_column(String(64))
    level: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))  # allow | deny | approve (the pure decision)
    rule: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # one of CALL_STATUSES
    approval_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    result_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    is_error: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
