"""The agents of a workspace: create, read, update, delete, with audit events.

Every workspace has a ready agent ``assistant`` (no tools), created lazily the
first time the workspace's agents are looked at, so chat works out of the box.
Only an admin may set a tier, override a tool's risk level (the agent's
``tool_levels`` or an MCP server's own ``tool_levels``: sending either at all,
even empty, is an admin's act) or configure a stdio MCP server (it runs a
command on the host); members may create agents and edit or delete the ones
they created, and may send a stored server's ``tool_levels`` back unchanged.

Each stored MCP server entry carries ``trusted`` (who configured it as it stands),
set by the registry, never the client (``agents/mcp_trust.py``).

An agent is ``hosted`` (Warden runs its loop) or ``external`` (the loop runs
elsewhere; Warden governs and meters it through the API keys bound to it): the
kind is set at creation and never changes, and a hosted-only operation on an
external agent (a chat session, a run) is a 409 ``agent_is_external``.
Deleting an agent revokes its bound keys in the same transaction (audited).

Views mask what may carry a token: MCP server header and env values, a URL's
userinfo and query values, and stdio args that look like secrets (the value
after a ``--token``/``--api-key``/``--secret``/``--password``-like flag, the
value of a ``KEY=VALUE`` arg). A masked placeholder sent back for the same
server (by name) means "unchanged": the stored value stays.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy.accounts import Principal
from warden.agents.mcp_trust import is_stdio, resolved_servers, stamp_trust
from warden.agents.secrets_mask import keep_masked_secrets, redacted_servers
from warden.errors import Conflict, Forbidden, NotFound, PositiveInt32, WholeNumber, parse_input
from warden.agents.policy import Tier
from warden.store import audit
from warden.store.agent_models import Agent
from warden.store.db import Database
from warden.store.models import ApiKey
from warden.store.base import new_id, utcnow

DEFAULT_AGENT = "assistant"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Answer clearly and concisely."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_INSTRUCTIONS = 100_000
MAX_TOOLS = 128
MAX_MCP_SERVERS = 16
AgentKind = Literal["hosted", "external"]


def _check_tool_names(tools: list[str] | None) -> list[str] | None:
    if tools is not None:
        for t in tools:
            if not _TOOL_NAME.match(t):
                raise ValueError(f"tool name '{t[:40]}' must be 1-128 letters, digits, '_', '.', ':' or '-'")
        if len(set(tools)) != len(tools):
            raise ValueError("tools must not repeat")
    return tools


def _check_name(v: str | None) -> str | None:
    if v is not None and not _NAME.match(v):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


class _AgentFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=2000)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    model: str | None = Field(default=None, min_length=1, max_length=200)  # auto | group | provider/model
    fallbacks: list[str] | None = Field(default=None, max_length=8)
    tools: list[str] | None = Field(default=None, max_length=MAX_TOOLS)
    mcp_servers: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_MCP_SERVERS)
    # Strict numbers: JSON true is not level 1, nor one step.
    tool_levels: dict[str, PositiveInt32] | None = None
    max_steps: Annotated[int, Field(ge=1, le=100, strict=True), WholeNumber] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    tier: Tier | None = None
    tier_reason: str | None = Field(default=None, max_length=500)

    _tools = field_validator("tools")(_check_tool_names)

    @field_validator("tool_levels")
    @classmethod
    def _levels(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            _check_tool_names(list(v))
            if any(level not in (1, 2, 3, 4) for level in v.values()):
                raise ValueError("levels must be 1, 2, 3 or 4")
        return v


class AgentCreate(_AgentFields):
    name: str = Field(min_length=1, max_length=64)
    # external: its loop runs elsewhere (no instructions or model needed); fixed for good.
    kind: AgentKind = "hosted"
    _name = field_validator("name")(_check_name)


# What a field sent as null in a PATCH goes back to (the create defaults).
_PATCH_DEFAULTS: dict[str, Any] = {"instructions": "", "max_steps": 8}


class AgentPatch(_AgentFields):
    """Only the fields sent change."""

    name: str | None = Field(default=None, min_length=1, max_length=64)
    kind: AgentKind | None = None  # accepted only unchanged (a view sent back), never changed
    _name = field_validator("name")(_check_name)


class AgentView(BaseModel):
    id: str
    workspace_id: str
    name: str
    kind: AgentKind
    description: str | None
    instructions: str
    model: str
    fallbacks: list[str]
    tools: list[str]
    mcp_servers: list[dict[str, Any]]
    tool_levels: dict[str, int]
    max_steps: int
    temperature: float | None
    tier: str
    tier_sticky: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: Agent) -> AgentView:
        policy = a.model_policy or {}
        return cls(id=a.id, workspace_id=a.workspace_id, name=a.name, kind=a.kind or "hosted",
                   description=a.description,
                   instructions=a.instructions, model=policy.get("model", "auto"),
                   fallbacks=list(policy.get("fallbacks", [])), tools=list(a.tools or []),
                   mcp_servers=redacted_servers(a.mcp_servers or []), tool_levels=dict(a.tool_levels or {}),
                   max_steps=a.max_steps, temperature=a.temperature, tier=a.tier,
                   tier_sticky=a.tier_sticky, created_by=a.created_by, created_at=a.created_at,
                   updated_at=a.updated_at)


def _authorize(fields: _AgentFields, principal: Principal) -> None:
    if principal.is_admin:
        return
    if fields.tier is not None:
        raise Forbidden("only an admin may set an agent's tier", code="admin_required")
    # Sent at all, not only non-empty: {} or null would clear the admin's overrides.
    if "tool_levels" in fields.model_fields_set:
        raise Forbidden("only an admin may override a tool's risk level", code="admin_required")
    if any(is_stdio(s) for s in fields.mcp_servers or []):
        raise Forbidden("only an admin may configure a stdio MCP server", code="admin_required")


def _authorize_server_levels(sent: list[dict[str, Any]], stored: list[dict[str, Any]],
                             principal: Principal) -> None:
    """A server's own ``tool_levels`` override its tools' risk levels, so only an admin may
    set or change them; a member may send a stored server's levels back as they are (and
    leave them out only where there are none)."""
    if principal.is_admin:
        return
    stored_levels = {s.get("name"): s.get("tool_levels") or {} for s in stored if isinstance(s, dict)}
    for i, server in enumerate(sent):
        if not isinstance(server, dict):
            continue  # parse_servers names the problem
        levels = server.get("tool_levels") or {}
        if levels != stored_levels.get(server.get("name"), {}):
            raise Forbidden(f"mcp_servers[{i}].tool_levels: only an admin may set or change an MCP "
                            "server's tool risk levels", code="admin_required")


def _audit_view(a: Agent) -> dict[str, Any]:
    servers = [s for s in a.mcp_servers or [] if isinstance(s, dict)]
    return {"name": a.name, "kind": a.kind, "model": (a.model_policy or {}).get("model"),
            "tools": list(a.tools or []),
            "mcp_servers": len(a.mcp_servers or []),
            "untrusted_mcp_servers": [s.get("name") for s in servers if s.get("trusted") is not True],
            "tool_levels": dict(a.tool_levels or {}), "max_steps": a.max_steps, "tier": a.tier}


ToolCheck = Callable[[list[str]], None]
ServerCheck = Callable[[list[dict[str, Any]], bool], None]


def _accept_tools(_: list[str]) -> None:
    return None


def _accept_servers(_: list[dict[str, Any]], __: bool) -> None:
    return None


def require_hosted(agent: Agent) -> None:
    """Refuse what only a hosted agent can do (its loop runs here) for an external one."""
    if agent.kind == "external":
        raise Conflict(f"agent '{agent.name}' is external: its loop runs elsewhere; use the gateway "
                       "and /mcp with its key", code="agent_is_external")


def require_bound_agent(principal: Principal, agent: Agent) -> None:
    """A key bound to an agent acts as that agent only: it may not start another's runs
    or sessions, nor ask the gate on another's behalf (issue 17)."""
    if principal.agent_id is not None and principal.agent_id != agent.id:
        raise Forbidden(f"this key is bound to another agent and may not act as agent '{agent.name}'",
                        code="agent_mismatch")


def default_agent_ref(principal: Principal, ref: str | None) -> str:
    """The agent a turn or session is for when none is named: a bound key's own, else the assistant."""
    return ref or principal.agent_id or "assistant"


class Agents:
    def __init__(self, db: Database, *, check_tools: ToolCheck = _accept_tools,
                 check_servers: ServerCheck = _accept_servers,
                 forget_keys: Callable[[list[str]], Awaitable[None]] | None = None,
                 forget_agent: Callable[[str], Awaitable[None]] | None = None) -> None:
        """``check_tools`` / ``check_servers(servers, is_admin)`` refuse unknown tools and
        bad or forbidden MCP servers before an agent is stored (they raise); ``forget_keys``
        drops cached lookups of the keys a deleted agent's revocation ended, everywhere;
        ``forget_agent`` a changed or deleted agent's cached copies (agents/agent_cache.py)."""
        self.db = db
        self._check_tools = check_tools
        self._check_servers = check_servers
        self._forget_keys = forget_keys
        self._forget_agent = forget_agent
        self._has_default: set[str] = set()  # workspaces known to have their assistant

    # --- reading --------------------------------------------------------------

    async def ensure_default(self, workspace_id: str) -> None:
        if workspace_id in self._has_default:
            return
        async with self.db.session() as s:
            found = (await s.execute(select(Agent.id).where(
                Agent.workspace_id == workspace_id, Agent.name == DEFAULT_AGENT))).first()
        if found is None:
            try:
                await self.db.run_tx(lambda s: self._insert_default(s, workspace_id))
            except Conflict:
                pass  # created concurrently
        self._has_default.add(workspace_id)

    async def _insert_default(self, s: AsyncSession, workspace_id: str) -> Agent:
        agent = Agent(id=new_id("agt"), workspace_id=workspace_id, name=DEFAULT_AGENT,
                      description="The ready-made assistant: no tools.",
                      instructions=DEFAULT_INSTRUCTIONS, model_policy={"model": "auto", "fallbacks": []},
                      tools=[], mcp_servers=[], tool_levels={}, max_steps=8, tier="student",
                      created_by="system")
        return await self._add(s, agent, actor="system")

    async def list(self, workspace_id: str) -> list[Agent]:
        await self.ensure_default(workspace_id)
        async with self.db.session() as s:
            agents = list((await s.execute(
                select(Agent).where(Agent.workspace_id == workspace_id).order_by(Agent.created_at, Agent.name)
            )).scalars())
            resolved = [await resolved_servers(s, a) for a in agents]
        for agent, servers in zip(agents, resolved, strict=True):
            if servers is not None:
                agent.mcp_servers = servers  # detached: shown, not written
        return agents

    async def get(self, workspace_id: str, ref: str) -> Agent:
        """By id (``agt_…``) or by name; another workspace's agent is not found."""
        await self.ensure_default(workspace_id)
        column = Agent.id if ref.startswith("agt_") else Agent.name
        async with self.db.session() as s:
            agent = (await s.execute(select(Agent).where(
                Agent.workspace_id == workspace_id, column == ref))).scalar_one_or_none()
            resolved = await resolved_servers(s, agent) if agent is not None else None
        if agent is None:
            raise NotFound(f"no agent '{ref[:80]}'", code="agent_not_found")
        if resolved is not None:
            agent.mcp_servers = resolved  # detached: shown and used, not written
        return agent

    # --- changes --------------------------------------------------------------

    def _check(self, fields: _AgentFields, principal: Principal) -> None:
        _authorize(fields, principal)
        if fields.tools:
            self._check_tools(list(fields.tools))
        if fields.mcp_servers:
            self._check_servers(list(fields.mcp_servers), principal.is_admin)

    async def create(self, workspace_id: str, data: AgentCreate | dict[str, Any], *,
                     principal: Principal) -> Agent:
        spec = parse_input(AgentCreate, data)
        self._check(spec, principal)
        _authorize_server_levels(list(spec.mcp_servers or []), [], principal)
        await self.ensure_default(workspace_id)
        agent = Agent(
            id=new_id("agt"), workspace_id=workspace_id, name=spec.name, kind=spec.kind,
            description=spec.description, instructions=spec.instructions or "",
            model_policy={"model": spec.model or "auto", "fallbacks": list(spec.fallbacks or [])},
            tools=list(spec.tools or []),
            mcp_servers=stamp_trust(keep_masked_secrets(list(spec.mcp_servers or []), []), [],
                                    is_admin=principal.is_admin),
            tool_levels=dict(spec.tool_levels or {}), max_steps=spec.max_steps or 8,
            temperature=spec.temperature, tier=spec.tier or "student",
            tier_sticky=spec.tier is not None, created_by=principal.key_id,
        )

        async def tx(s: AsyncSession) -> Agent:
            await self._add(s, agent, actor=principal.actor)
            if spec.tier is not None and spec.tier != "student":
                await _audit_tier(s, agent, "student", principal.actor, spec.tier_reason)
            return agent

        return await self.db.run_tx(tx)

    async def _add(self, s: AsyncSession, agent: Agent, *, actor: str) -> Agent:
        s.add(agent)
        try:
            await s.flush()
        except IntegrityError:
            raise Conflict(f"an agent named '{agent.name}' already exists", code="agent_exists") from None
        await audit.append(s, workspace_id=agent.workspace_id, actor=actor, action="agent.create",
                           target=agent.id, data=_audit_view(agent))
        return agent

    async def update(self, workspace_id: str, ref: str, data: AgentPatch | dict[str, Any], *,
                     principal: Principal) -> Agent:
        patch = parse_input(AgentPatch, data)
        self._check(patch, principal)
        current = await self.get(workspace_id, ref)
        _check_owner(current, principal)
        sent = patch.model_dump(exclude_unset=True)

        async def tx(s: AsyncSession) -> Agent:
            agent = await s.get(Agent, current.id)
            if agent is None:
                raise NotFound(f"no agent '{ref[:80]}'", code="agent_not_found")
            if sent.get("kind") not in (None, agent.kind):
                raise Conflict(f"an agent's kind is fixed at creation: '{agent.name}' stays {agent.kind} "
                               "(create another agent instead)", code="agent_kind_immutable")
            old_tier = agent.tier
            stored_servers = await resolved_servers(s, agent)
            if stored_servers is not None:
                agent.mcp_servers = stored_servers  # any write records the flags it resolved
            if sent.get("name") not in (None, agent.name) and (await s.execute(select(Agent.id).where(
                    Agent.workspace_id == workspace_id, Agent.name == sent["name"]))).first() is not None:
                raise Conflict(f"an agent named '{sent['name']}' already exists", code="agent_exists")
            for key in ("name", "description", "instructions", "max_steps", "temperature"):
                if key in sent:  # null: back to the field's default (a name has none: it stays)
                    value = sent[key] if sent[key] is not None else _PATCH_DEFAULTS.get(key, None)
                    if value is not None or key in ("description", "temperature"):
                        setattr(agent, key, value)
            if sent.get("mcp_servers"):
                # Checked on the row being changed, so a concurrent admin edit is not undone.
                stored = list(agent.mcp_servers or [])
                _authorize_server_levels(sent["mcp_servers"], stored, principal)
                sent["mcp_servers"] = stamp_trust(keep_masked_secrets(sent["mcp_servers"], stored), stored,
                                                  is_admin=principal.is_admin)
            for key in ("tools", "mcp_servers", "tool_levels"):
                if key in sent:
                    setattr(agent, key, sent[key] if sent[key] is not None else type(getattr(agent, key))())
            if "model" in sent or "fallbacks" in sent:
                policy = dict(agent.model_policy or {})
                if "model" in sent:
                    policy["model"] = sent["model"] or "auto"
                if "fallbacks" in sent:
                    policy["fallbacks"] = list(sent["fallbacks"] or [])
                agent.model_policy = policy
            if patch.tier is not None:
                agent.tier = patch.tier
                agent.tier_sticky = True  # a manual change sticks until the next manual one
            agent.updated_at = utcnow()
            await s.flush()
            changed = sorted(k for k in sent if k not in ("tier_reason", "kind"))
            await audit.append(s, workspace_id=workspace_id, actor=principal.actor, action="agent.update",
                               target=agent.id, data={"changed": changed, **_audit_view(agent)})
            if patch.tier is not None and patch.tier != old_tier:
                await _audit_tier(s, agent, old_tier, principal.actor, patch.tier_reason)
            return agent

        updated = await self.db.run_tx(tx)
        if self._forget_agent is not None:
            await self._forget_agent(updated.id)
        return updated

    async def delete(self, workspace_id: str, ref: str, *, principal: Principal) -> Agent:
        current = await self.get(workspace_id, ref)
        _check_owner(current, principal)

        revoked: list[str] = []

        async def tx(s: AsyncSession) -> Agent:
            revoked.clear()  # run_tx may try again
            # Locked: a key being bound to it now either lands before (and is revoked) or fails.
            agent = await s.get(Agent, current.id, with_for_update=True)
            if agent is None:
                raise NotFound(f"no agent '{ref[:80]}'", code="agent_not_found")
            revoked.extend(await _revoke_bound_keys(s, agent, principal.actor))
            await s.delete(agent)
            await audit.append(s, workspace_id=workspace_id, actor=principal.actor, action="agent.delete",
                               target=agent.id, data={"name": agent.name, "revoked_keys": len(revoked)})
            return agent

        deleted = await self.db.run_tx(tx)
        if revoked and self._forget_keys is not None:
            await self._forget_keys(list(revoked))
        if self._forget_agent is not None:
            await self._forget_agent(deleted.id)
        deleted.mcp_servers = current.mcp_servers  # as shown (trust resolved), not the raw row
        if deleted.name == DEFAULT_AGENT:
            self._has_default.discard(workspace_id)  # comes back on next use
        return deleted


async def _revoke_bound_keys(s: AsyncSession, agent: Agent, actor: str) -> list[str]:
    """A key bound to an agent stands for it: it must not outlive it as a plain key."""
    keys = list((await s.execute(select(ApiKey).where(
        ApiKey.agent_id == agent.id, ApiKey.revoked_at.is_(None)))).scalars())
    for key in keys:
        key.revoked_at = utcnow()
        await audit.append(s, workspace_id=agent.workspace_id, actor=actor, action="api_key.revoke",
                           target=key.id, data={"name": key.name, "reason": "agent deleted",
                                                "agent_id": agent.id})
    return [k.id for k in keys]


def _check_owner(agent: Agent, principal: Principal) -> None:
    if not principal.is_admin and agent.created_by != principal.key_id:
        raise Forbidden("members may change only the agents they created", code="not_owner")


async def _audit_tier(s: AsyncSession, agent: Agent, old: str, actor: str, reason: str | None) -> None:
    await audit.append(s, workspace_id=agent.workspace_id, actor=actor, action="agent.tier_change",
                       target=agent.id, data={"from": old, "to": agent.tier, "manual": True,
                                              "reason": reason or ""})

