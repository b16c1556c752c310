"""Per-agent memory: save a note, find notes by full-text search.

Every query is scoped to one (workspace, agent) pair; there is no way to ask
for another agent's notes. By design, memory belongs to the agent, not to a
caller: every member who chats with an agent shares what it remembers (a note
saved in one member's session can be recalled in another's), as a shared
assistant's notes would be. Give an agent to one member, or keep private
matters out of a shared agent's memory, when that matters. Ranking: ``bm25`` over the FTS5 index on SQLite,
``ts_rank`` over the generated tsvector on PostgreSQL (see migration 0003).
A query is reduced to its words, any of which may match (the best matches
first), so the model's free text can never be a syntax error in either
dialect's query language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, String, Text, select, text

from warden.store.db import Database
from warden.store.memory_models import AgentMemory
from warden.store.base import UTCDateTime, new_id

MAX_TEXT_CHARS = 8000
MAX_TAGS = 16
MAX_TAG_CHARS = 64
MAX_LIMIT = 50
_MAX_QUERY_WORDS = 32
_WORD = re.compile(r"\w+")

# Typed result columns, so raw SQL decodes JSON and timestamps like the ORM does.
_RESULT_TYPES = {"id": String(), "text": Text(), "tags": JSON(), "created_at": UTCDateTime()}
_SQLITE_SEARCH = text(
    "SELECT m.id, m.text, m.tags, m.created_at FROM agent_memory_fts "
    "JOIN agent_memory AS m ON m.seq = agent_memory_fts.rowid "
    "WHERE agent_memory_fts MATCH :query AND m.workspace_id = :ws AND m.agent_id = :agent "
    "ORDER BY bm25(agent_memory_fts), m.seq DESC LIMIT :limit"
).columns(**_RESULT_TYPES)
_PG_SEARCH = text(
    "SELECT id, text, tags, created_at FROM agent_memory, websearch_to_tsquery('english', :query) AS q "
    "WHERE search @@ q AND workspace_id = :ws AND agent_id = :agent "
    "ORDER BY ts_rank(search, q) DESC, seq DESC LIMIT :limit"
).columns(**_RESULT_TYPES)


@dataclass(frozen=True, slots=True)
class MemoryItem:
    id: str
    text: str
    tags: list[str]
    created_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "text": self.text, "tags": self.tags,
                "created_at": self.created_at.isoformat()}


class AgentMemoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, workspace_id: str, agent_id: str, text_: str,
                   tags: list[str] | None = None) -> MemoryItem:
        """Store one note; raises ValueError (a message for the model) on bad input."""
        note = text_.strip()
        if not note:
            raise ValueError("text must not be empty")
        if len(note) > MAX_TEXT_CHARS:
            raise ValueError(f"text is longer than {MAX_TEXT_CHARS} characters")
        clean_tags = _clean_tags(tags or [])
        row = AgentMemory(id=new_id("mem"), workspace_id=workspace_id, agent_id=agent_id,
                          text=note, tags=clean_tags)
        async with self.db.transaction() as s:
            s.add(row)
        return MemoryItem(row.id, row.text, row.tags, row.created_at)

    async def search(self, workspace_id: str, agent_id: str, query: str,
                     limit: int = 5) -> list[MemoryItem]:
        """Best matches first; an empty (wordless) query lists the newest notes."""
        limit = max(1, min(limit, MAX_LIMIT))
        words = _WORD.findall(query)[:_MAX_QUERY_WORDS]
        params = {"ws": workspace_id, "agent": agent_id, "limit": limit}
        async with self.db.session() as s:
            if not words:
                rows = (await s.execute(
                    select(AgentMemory.id, AgentMemory.text, AgentMemory.tags, AgentMemory.created_at)
                    .where(AgentMemory.workspace_id == workspace_id, AgentMemory.agent_id == agent_id)
                    .order_by(AgentMemory.seq.desc()).limit(limit)
                )).all()
            elif self.db.is_sqlite:
                # Each word quoted: FTS5 then reads it as a plain term, never as an operator.
                match = " OR ".join(f'"{w}"' for w in words)
                rows = (await s.execute(_SQLITE_SEARCH, {**params, "query": match})).all()
            else:
                # websearch_to_tsquery never raises on odd input; "or" joins the words.
                rows = (await s.execute(_PG_SEARCH, {**params, "query": " or ".join(words)})).all()
        return [_item(*row) for row in rows]


def _clean_tags(tags: list[str]) -> list[str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError("tags must be non-empty strings")
        if len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"a tag is longer than {MAX_TAG_CHARS} characters")
        if tag.strip() not in out:
            out.append(tag.strip())
    return out


def _item(id_: str, text_: str, tags: list[str] | None, created_at: datetime) -> MemoryItem:
    return MemoryItem(id_, text_, list(tags or []), created_at)
