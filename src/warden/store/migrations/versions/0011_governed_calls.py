"""governed calls of external agents (issue 17): approvals without a run, recorded actions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder slot: filled by its issue's work


def downgrade() -> None:
    pass
