"""run leases (issue 14 item 3): who executes a run, until when, and how often it was taken over

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('takeovers', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index('ix_runs_status_lease', ['status', 'lease_expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_status_lease')
        batch_op.drop_column('takeovers')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('owner')
