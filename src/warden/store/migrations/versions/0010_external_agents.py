"""external agents (issue 17): agents.kind, API keys bound to an agent

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='hosted'))
    # Deleting an agent revokes its keys first (agents/registry.py); the FK then lets the
    # revoked rows stay, unbound, so the key list keeps its history.
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_id', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_keys_agent_id'), ['agent_id'], unique=False)
        batch_op.create_foreign_key('fk_api_keys_agent_id_agents', 'agents', ['agent_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint('fk_api_keys_agent_id_agents', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_keys_agent_id'))
        batch_op.drop_column('agent_id')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('kind')
