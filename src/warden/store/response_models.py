"""Stored responses of the OpenAI Responses API (``store: true``): one row a
response, per workspace, so ``previous_response_id`` can continue a conversation
and ``GET /v1/responses/{id}`` can read it back until it expires."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class StoredResponse(Base):
    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # resp_…
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the response object as returned
    # The conversation this response continued (its previous responses' items) and its own input:
    # history + input + response.output is what a follow-up continues from.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
