"""feedback on an external agent's governed calls (issue 17): feedback.run_id nullable;
an agent's spend by time (its actions list)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.alter_column('run_id', existing_type=sa.String(length=40), nullable=True)
    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.create_index('ix_spend_ws_agent_ts', ['workspace_id', 'agent_id', 'ts'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.drop_index('ix_spend_ws_agent_ts')
    # Feedback on a governed call has no run: the old shape has no place for it.
    op.execute("DELETE FROM feedback WHERE run_id IS NULL")
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.alter_column('run_id', existing_type=sa.String(length=40), nullable=False)
