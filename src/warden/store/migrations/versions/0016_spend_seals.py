"""an agent's model spend in the audit chain (issue 17): spend.audit_seq, the
``spend.sealed`` event that seals each row (NULL until the sealer reaches it; rows
written before are sealed by its first runs)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on SQLite, no rewrite on PostgreSQL.
    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audit_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        # (audit_seq, id): a seal's rows for verify, and the sealer's oldest unsealed rows in order.
        batch_op.create_index('ix_spend_audit_seq', ['audit_seq', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('spend', schema=None) as batch_op:
        batch_op.drop_index('ix_spend_audit_seq')
        batch_op.drop_column('audit_seq')
