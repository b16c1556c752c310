"""Agent memory: short notes an agent saved for itself, searchable by full text.

The full-text index is dialect-specific and lives only in the migration
(0003_agent_memory): an FTS5 table kept in step by triggers on SQLite, a
generated ``tsvector`` column with a GIN index on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class AgentMemory(Base):
    __tablename__ = "agent_memory"
    __table_args__ = (Index("ix_agent_memory_ws_agent_created", "workspace_id", "agent_id", "created_at"),)

    # An integer key the SQLite FTS5 index can use as its rowid (a table's implicit
    # rowid may change on VACUUM; an INTEGER PRIMARY KEY never does).
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # Forgotten with the agent: memory nobody can reach is a leak, not a record.
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
