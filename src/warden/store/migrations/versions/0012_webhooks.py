"""outbound webhooks per workspace and their delivery log (issue 17)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder slot: filled by its issue's work


def downgrade() -> None:
    pass
