"""external agents (issue 17): agents.kind, API keys bound to an agent

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder slot: filled by its issue's work


def downgrade() -> None:
    pass
