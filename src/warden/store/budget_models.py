"""Budget tables (migration 0004): spending limits per workspace, API key or agent."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class BudgetRow(Base):
    """One budget: ``limit_usd`` per ``period`` for one scope of a workspace.

    A scope may have one budget per period (e.g. $5 a day and $100 a month).
    Spend itself is counted in the shared state store, not here.
    """

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("workspace_id", "scope", "scope_id", "period"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # workspace | key | agent
    scope_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(8))  # day | month | total
    limit_usd: Mapped[Decimal] = mapped_column(Numeric(24, 12))
    per_request_cap_usd: Mapped[Decimal | None] = mapped_column(Numeric(24, 12), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
