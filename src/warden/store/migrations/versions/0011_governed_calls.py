"""governed calls of external agents (issue 17): approvals without a run, recorded actions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa



revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.alter_column('run_id', existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column('session_id', existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column('tool_call_id', existing_type=sa.String(length=40), nullable=True)
        batch_op.add_column(sa.Column('source', sa.String(length=24), server_default='run', nullable=False))
        batch_op.add_column(sa.Column('call_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('consumed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_approvals_call_hash'), ['call_hash'], unique=False)
    op.create_table('governed_calls',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('agent_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=True),
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('tool', sa.String(length=200), nullable=False),
    sa.Column('arguments_hash', sa.String(length=64), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('rule', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('approval_id', sa.String(length=40), nullable=True),
    sa.Column('result_hash', sa.String(length=64), nullable=True),
    sa.Column('is_error', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('governed_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_governed_calls_approval_id'), ['approval_id'], unique=False)
        batch_op.create_index('ix_governed_calls_ws_agent_created', ['workspace_id', 'agent_id', 'created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('governed_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_governed_calls_ws_agent_created')
        batch_op.drop_index(batch_op.f('ix_governed_calls_approval_id'))
    op.drop_table('governed_calls')
    op.execute("DELETE FROM approvals WHERE run_id IS NULL")  # external approvals have no place in the old shape
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approvals_call_hash'))
        batch_op.drop_column('consumed_at')
        batch_op.drop_column('call_hash')
        batch_op.drop_column('source')
        batch_op.alter_column('tool_call_id', existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column('session_id', existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column('run_id', existing_type=sa.String(length=40), nullable=False)
