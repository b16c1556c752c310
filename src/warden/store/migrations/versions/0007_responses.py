"""stored responses (issue 16, Responses API): ``stored_responses``, one row a
response kept with ``store: true``, per workspace, until it expires

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stored_responses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.Column('input_items', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.create_index('ix_stored_responses_expires_at', ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_stored_responses_workspace_id'), ['workspace_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stored_responses_workspace_id'))
        batch_op.drop_index('ix_stored_responses_expires_at')
    op.drop_table('stored_responses')
