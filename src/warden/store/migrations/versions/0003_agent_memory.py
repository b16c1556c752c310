"""agent memory with full-text search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

SQLite: an external-content FTS5 table over (text, tags), rowid = agent_memory.seq,
kept in step by triggers. PostgreSQL: a generated tsvector column with a GIN index.
Both stem English words (FTS5 ``porter``, PG ``english``), so "meetings" finds "meeting".
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE agent_memory_fts USING fts5("
    "text, tags, content='agent_memory', content_rowid='seq', tokenize='porter unicode61')",
    "CREATE TRIGGER agent_memory_fts_insert AFTER INSERT ON agent_memory BEGIN "
    "INSERT INTO agent_memory_fts(rowid, text, tags) VALUES (new.seq, new.text, new.tags); END",
    "CREATE TRIGGER agent_memory_fts_delete AFTER DELETE ON agent_memory BEGIN "
    "INSERT INTO agent_memory_fts(agent_memory_fts, rowid, text, tags) "
    "VALUES ('delete', old.seq, old.text, old.tags); END",
    "CREATE TRIGGER agent_memory_fts_update AFTER UPDATE ON agent_memory BEGIN "
    "INSERT INTO agent_memory_fts(agent_memory_fts, rowid, text, tags) "
    "VALUES ('delete', old.seq, old.text, old.tags); "
    "INSERT INTO agent_memory_fts(rowid, text, tags) VALUES (new.seq, new.text, new.tags); END",
]

_PG_FTS = [
    "ALTER TABLE agent_memory ADD COLUMN search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('english', text || ' ' || coalesce(tags::text, ''))) STORED",
    "CREATE INDEX ix_agent_memory_search ON agent_memory USING GIN (search)",
]


def upgrade() -> None:
    op.create_table('agent_memory',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('agent_id', sa.String(length=40), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    op.create_index('ix_agent_memory_ws_agent_created', 'agent_memory',
                    ['workspace_id', 'agent_id', 'created_at'], unique=False)
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_FTS if dialect == 'sqlite' else _PG_FTS if dialect == 'postgresql' else []:
        op.execute(sa.text(statement))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for name in ('insert', 'delete', 'update'):
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS agent_memory_fts_{name}"))
        op.execute(sa.text("DROP TABLE IF EXISTS agent_memory_fts"))
    op.drop_index('ix_agent_memory_ws_agent_created', table_name='agent_memory')
    op.drop_table('agent_memory')
