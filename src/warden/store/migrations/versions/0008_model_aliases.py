"""gateway contract: model aliases, coding-session id on spend rows (issue 16)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_aliases',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('pattern', sa.String(length=128), nullable=False),
    sa.Column('target', sa.String(length=160), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'pattern')
    )
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_aliases_workspace_id'), ['workspace_id'], unique=False)

    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_spend_ws_session', ['workspace_id', 'session_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.drop_index('ix_spend_ws_session')
        batch_op.drop_column('session_id')
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_aliases_workspace_id'))
    op.drop_table('model_aliases')
