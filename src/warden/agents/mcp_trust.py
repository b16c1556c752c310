"""Who configured an agent's MCP server entry: the ``trusted`` flag on each stored entry.

Each stored MCP server entry carries ``trusted``: whether an admin configured it
as it stands (``agents/tools/mcp.py``: only then may a tool's ``readOnlyHint`` lower
its risk level below 3). The registry sets it, never the client: an entry an
admin sends is trusted unless the admin sends ``trusted: false``; an entry a
member sends keeps its stored flag only when it comes back unchanged (same
name, same configuration), so a member's new, changed or renamed server is
untrusted, and a ``trusted`` value from a member is ignored. Entries stored
before the flag existed are trusted when the agent's creator is an admin key
(or the CLI, or a stdio server, which only an admin can configure), else not.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.store.agent_models import Agent
from warden.store.models import ApiKey


def is_stdio(server: dict[str, Any]) -> bool:
    return server.get("transport") == "stdio" or "command" in server


# Creators that stand for the operator: the management CLI and Warden itself.
_OPERATOR_CREATORS = ("cli", "system")


def _configuration(server: dict[str, Any]) -> dict[str, Any]:
    """An entry as configured, for comparing: no trust flag, empty fields left out
    (so ``"args": []`` and no ``args`` compare equal)."""
    return {k: v for k, v in server.items() if k != "trusted" and v not in (None, "", [], {})}


def stamp_trust(sent: list[dict[str, Any]], stored: list[dict[str, Any]], *,
                is_admin: bool) -> list[dict[str, Any]]:
    """``sent`` (secrets already restored) with each entry's ``trusted`` set by who sent it."""
    stored_by_name = {s.get("name"): s for s in stored if isinstance(s, dict)}
    out = []
    for server in sent:
        entry = dict(server)
        asked = entry.pop("trusted", None)
        if is_admin:
            trusted = asked is not False  # an admin may also keep a server untrusted on purpose
        else:
            # The member's own value never counts: an entry keeps its flag only when unchanged.
            before = stored_by_name.get(entry.get("name"))
            trusted = (before is not None and before.get("trusted") is True
                       and _configuration(before) == _configuration(entry))
        entry["trusted"] = trusted
        out.append(entry)
    return out


async def _creator_is_admin(s: AsyncSession, agent: Agent) -> bool:
    if agent.created_by in _OPERATOR_CREATORS:
        return True
    role = (await s.execute(select(ApiKey.role).where(
        ApiKey.id == agent.created_by, ApiKey.workspace_id == agent.workspace_id))).scalar_one_or_none()
    return role == "admin"  # a key that no longer exists proves nothing: untrusted


async def resolved_servers(s: AsyncSession, agent: Agent) -> list[dict[str, Any]] | None:
    """The agent's servers with ``trusted`` filled in on entries stored before the flag
    existed; None when every entry has it already (the common case: no query)."""
    servers = list(agent.mcp_servers or [])
    if all(not isinstance(x, dict) or "trusted" in x for x in servers):
        return None
    by_admin = await _creator_is_admin(s, agent)
    return [{**x, "trusted": by_admin or is_stdio(x)} if isinstance(x, dict) and "trusted" not in x else x
            for x in servers]
