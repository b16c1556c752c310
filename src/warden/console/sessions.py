"""Console sign-in sessions, server side: an API key signs in once, the browser then
holds a random token in an HttpOnly cookie.

Only the token's SHA-256 is stored. Every request resolves the token with one query
that joins the key: a revoked key (from the API, the CLI or another instance) ends
its sessions at the next click, with no cache to invalidate. Sign-in and sign-out
are audited like any other action.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.store import audit
from warden.store.base import utcnow
from warden.store.console_models import ConsoleSession
from warden.store.db import Database
from warden.store.models import ApiKey, Workspace
from warden.tenancy.accounts import Principal

# last_seen_at is bumped at most this often: a click is a read, not a write.
_SEEN_EVERY = timedelta(seconds=60)
_KEPT_AFTER_END = timedelta(days=1)  # an ended session's row, then deleted at a sign-in


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a console page: the key's principal and the session's CSRF token."""

    principal: Principal
    session_id: str
    csrf_token: str
    expires_at: datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)

    async def open(self, principal: Principal) -> tuple[str, Viewer]:
        """A new session for a key that just authenticated: (cookie token, viewer)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        row = ConsoleSession(id=token_digest(token), key_id=principal.key_id, workspace_id=principal.workspace_id,
                             csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + self.ttl,
                             last_seen_at=now)

        async def tx(s: AsyncSession) -> None:
            # Sign-ins are rare: a good moment to forget sessions that ended a day ago.
            await s.execute(delete(ConsoleSession).where(or_(
                ConsoleSession.expires_at < now - _KEPT_AFTER_END, ConsoleSession.revoked_at < now - _KEPT_AFTER_END)))
            s.add(row)
            await s.flush()
            await audit.append(s, workspace_id=principal.workspace_id, actor=principal.actor,
                               action="console.sign_in", target=principal.key_id)

        await self.db.run_tx(tx)
        return token, Viewer(principal, row.id, row.csrf_token, row.expires_at)

    async def resolve(self, token: str | None) -> Viewer | None:
        """The viewer of a cookie's token; None when unknown, expired, signed out or its key revoked."""
        if not token or len(token) > 128:
            return None
        now = utcnow()
        async with self.db.session() as s:
            row = (await s.execute(
                select(ConsoleSession, ApiKey, Workspace.name)
                .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
                .join(Workspace, Workspace.id == ApiKey.workspace_id)
                .where(ConsoleSession.id == token_digest(token), ConsoleSession.revoked_at.is_(None),
                       ConsoleSession.expires_at > now, ApiKey.revoked_at.is_(None))
            )).first()
            if row is None:
                return None
            session, key, ws_name = row
            if now - session.last_seen_at > _SEEN_EVERY:
                await s.execute(update(ConsoleSession).where(ConsoleSession.id == session.id)
                                .values(last_seen_at=now))
                await s.commit()
        principal = Principal(key.workspace_id, ws_name, key.id, key.role, key.rpm_limit, key.tpm_limit,
                              key.agent_id)
        return Viewer(principal, session.id, session.csrf_token, session.expires_at)

    async def close(self, viewer: Viewer) -> None:
        """Sign out: the session can no longer be used, whoever holds its cookie."""

        async def tx(s: AsyncSession) -> None:
            await s.execute(update(ConsoleSession).where(ConsoleSession.id == viewer.session_id)
                            .values(revoked_at=utcnow()))
            await audit.append(s, workspace_id=viewer.principal.workspace_id, actor=viewer.principal.actor,
                               action="console.sign_out", target=viewer.principal.key_id)

        await self.db.run_tx(tx)
