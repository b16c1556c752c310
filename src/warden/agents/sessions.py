"""Chat sessions and their messages, and the history a model gets to see.

A session belongs to its workspace and to the API key that created it: a member
sees only their own sessions, an admin every session of the workspace, and any
other session (including another workspace's) is simply not found.

History sent to a model is windowed to its context: whole turns (a user message
and everything up to the next one) go oldest first, the instructions and the
current turn always stay, and an assistant tool call never loses its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy.accounts import Principal
from warden.agents.registry import Agents, default_agent_ref, require_bound_agent, require_hosted
from warden.errors import NotFound
from warden.gateway.complexity import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS
from warden.gateway.types import Message, TextPart, ToolCall
from warden.store.agent_models import ChatSession
from warden.store.agent_models import Message as MessageRow
from warden.store.db import Database
from warden.store.base import new_id, utcnow

PREVIEW_CHARS = 160
MISSING_RESULT = "(no result: the run ended before this tool call finished)"


class SessionView(BaseModel):
    id: str
    agent_id: str
    title: str | None
    preview: str | None
    message_count: int
    api_key_id: str | None
    created_at: datetime
    last_activity_at: datetime

    @classmethod
    def of(cls, s: ChatSession) -> SessionView:
        return cls.model_validate(s, from_attributes=True)


class MessageView(BaseModel):
    id: str
    seq: int
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    run_id: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, m: MessageRow) -> MessageView:
        return cls.model_validate(m, from_attributes=True)


@dataclass(slots=True)
class NewMessage:
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    run_id: str | None = None
    tokens: int | None = None
    id: str = field(default_factory=lambda: new_id("msg"))


class Sessions:
    def __init__(self, db: Database, agents: Agents) -> None:
        self.db = db
        self.agents = agents

    async def create(self, principal: Principal, agent_ref: str | None = None,
                     title: str | None = None) -> ChatSession:
        agent = await self.agents.get(principal.workspace_id, default_agent_ref(principal, agent_ref))
        require_bound_agent(principal, agent)
        require_hosted(agent)  # an external agent's conversation is not held here
        row = ChatSession(id=new_id("ses"), workspace_id=principal.workspace_id, agent_id=agent.id,
                          api_key_id=principal.key_id, title=title, message_count=0)
        async with self.db.transaction() as s:
            s.add(row)
        return row

    async def list(self, principal: Principal, *, limit: int = 50, offset: int = 0) -> list[ChatSession]:
        q = (select(ChatSession).where(ChatSession.workspace_id == principal.workspace_id)
             .order_by(ChatSession.last_activity_at.desc(), ChatSession.id.desc()).limit(limit).offset(offset))
        if not principal.is_admin:
            q = q.where(ChatSession.api_key_id == principal.key_id)
        async with self.db.session() as s:
            return list((await s.execute(q)).scalars())

    async def get(self, principal: Principal, session_id: str) -> ChatSession:
        async with self.db.session() as s:
            row = await s.get(ChatSession, session_id)
        if (row is None or row.workspace_id != principal.workspace_id
                or (not principal.is_admin and row.api_key_id != principal.key_id)):
            raise NotFound(f"no session '{session_id[:80]}'", code="session_not_found")
        return row

    async def messages(self, session_id: str, *, after: int = 0, limit: int = 100) -> list[MessageRow]:
        async with self.db.session() as s:
            return list((await s.execute(
                select(MessageRow).where(MessageRow.session_id == session_id, MessageRow.seq > after)
                .order_by(MessageRow.seq).limit(limit)
            )).scalars())

    async def history(self, session_id: str) -> list[MessageRow]:
        async with self.db.session() as s:
            return list((await s.execute(
                select(MessageRow).where(MessageRow.session_id == session_id).order_by(MessageRow.seq)
            )).scalars())

    async def delete(self, principal: Principal, session_id: str) -> ChatSession:
        row = await self.get(principal, session_id)
        async with self.db.transaction() as s:
            # Messages go explicitly too: not every SQLite connection enforces cascades.
            await s.execute(delete(MessageRow).where(MessageRow.session_id == row.id))
            await s.execute(delete(ChatSession).where(ChatSession.id == row.id))
        return row

    @staticmethod
    async def append(s: AsyncSession, session_id: str, messages: Sequence[NewMessage]) -> list[MessageRow]:
        """Append in order inside the caller's transaction; keeps count, activity and preview."""
        row = await s.get(ChatSession, session_id)
        if row is None:
            raise NotFound(f"no session '{session_id[:80]}'", code="session_not_found")
        # The count may lag a crashed writer: the highest seq is the truth.
        top = (await s.execute(select(func.max(MessageRow.seq)).where(MessageRow.session_id == session_id))).scalar()
        seq = max(top or 0, 0)
        out: list[MessageRow] = []
        now = utcnow()
        for m in messages:
            seq += 1
            msg = MessageRow(id=m.id, session_id=session_id, workspace_id=row.workspace_id, seq=seq,
                             role=m.role, content=m.content, tool_calls=m.tool_calls,
                             tool_call_id=m.tool_call_id, name=m.name, run_id=m.run_id,
                             created_at=now, tokens=m.tokens)
            s.add(msg)
            out.append(msg)
            if m.role in ("user", "assistant") and m.content:
                row.preview = m.content[:PREVIEW_CHARS]
            if m.role == "user" and not row.title:
                row.title = m.content[:80] if m.content else None
        row.message_count = seq
        row.last_activity_at = now
        await s.flush()
        return out


# --- what the model sees -----------------------------------------------------


def to_model_messages(rows: Sequence[MessageRow]) -> list[Message]:
    """Stored rows -> the internal format, repaired so every tool call has exactly one result
    (a run cut short may have left a call unanswered; an answer without its call is dropped)."""
    out: list[Message] = []
    open_calls: list[ToolCall] = []

    def close_open() -> None:
        for call in open_calls:
            out.append(Message(role="tool", content=[TextPart(MISSING_RESULT)], tool_call_id=call.id,
                               name=call.name))
        open_calls.clear()

    for r in rows:
        if r.role == "tool":
            match = next((c for c in open_calls if c.id == r.tool_call_id), None)
            if match is None:
                continue
            open_calls.remove(match)
            out.append(Message(role="tool", content=[TextPart(r.content or "")],
                               tool_call_id=r.tool_call_id, name=r.name or match.name))
            continue
        close_open()
        if r.role == "assistant":
            calls = [ToolCall(c["id"], c["name"], c.get("arguments", "{}")) for c in r.tool_calls or []]
            out.append(Message(role="assistant", content=[TextPart(r.content)] if r.content else [],
                               tool_calls=calls))
            open_calls.extend(calls)
        elif r.role == "user":
            out.append(Message.text("user", r.content or ""))
    close_open()
    return out


def estimate_message_tokens(m: Message) -> int:
    chars = sum(len(p.text) for p in m.content if isinstance(p, TextPart))
    chars += sum(len(c.name) + len(c.arguments) for c in m.tool_calls)
    return MESSAGE_OVERHEAD_TOKENS + -(-chars // CHARS_PER_TOKEN)


def split_turns(messages: Sequence[Message]) -> list[list[Message]]:
    """A turn starts at each user message; tool calls and results stay in their turn."""
    turns: list[list[Message]] = []
    for m in messages:
        if m.role == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def window(messages: Sequence[Message], budget_tokens: int) -> list[Message]:
    """The newest whole turns that fit ``budget_tokens``; the last turn is always kept."""
    turns = split_turns(messages)
    if not turns:
        return []
    kept = [turns[-1]]
    used = sum(estimate_message_tokens(m) for m in turns[-1])
    for turn in reversed(turns[:-1]):
        cost = sum(estimate_message_tokens(m) for m in turn)
        if used + cost > budget_tokens:
            break  # contiguous: once a turn is dropped, every older one is too
        kept.append(turn)
        used += cost
    return [m for turn in reversed(kept) for m in turn]
