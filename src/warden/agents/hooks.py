"""Where a run meets what surrounds it: every extension point of the runtime, in one file.

The runtime codes against these and imports nothing above it: governance
implements :class:`RunHooks` and the :data:`PolicySource`, the tool stack the
:data:`ToolboxFactory`. Each is handed to ``Runs`` when it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.policy import WorkspacePolicy
from warden.agents.tools.base import Tool
from warden.gateway.types import ToolSpec
from warden.store.agent_models import Agent, Run


@dataclass(frozen=True, slots=True)
class Action:
    """One governed tool call as the hooks see it."""

    tool_call_id: str
    call_id: str
    name: str
    arguments: str
    level: int | None
    decision: str
    reason: str | None
    rule: str | None
    step: int
    # The id the approval of a paused action takes (the runtime names it, so its events
    # carry it); None for an action that needs no human.
    approval_id: str | None = None


class RunHooks:
    """Where governance joins a run. Each hook runs inside the transaction that
    records the moment (so its rows and audit events commit or roll back with
    it, and the transaction is retried as a whole if the audit chain moved).
    The defaults do nothing."""

    async def decided(self, s: AsyncSession, run: Run, agent: Agent, actions: list[Action]) -> None:
        """Tool calls of a step were judged (allow / approve / deny)."""

    async def paused(self, s: AsyncSession, run: Run, agent: Agent, pending: list[Action]) -> None:
        """The run stops here until a human settles ``pending``."""

    async def ended(self, s: AsyncSession, run: Run, status: str) -> None:
        """The run reached a final status (completed, failed or cancelled)."""

    async def cancelled(self, s: AsyncSession, run: Run, actor: str, reason: str) -> None:
        """An admin cancelled the run (``ended`` is called too)."""


# The workspace's policy overrides (None: the tier matrix alone), by workspace id.
PolicySource = Callable[[str], Awaitable[WorkspacePolicy | None]]


class ToolboxLike(Protocol):
    """The tools one agent may call during one run."""

    tools: dict[str, Tool]

    def specs(self) -> list[ToolSpec]:
        """The tools as the model is told about them."""
        ...

    async def close(self) -> None:
        """Release what the toolbox opened (MCP sessions, processes)."""
        ...


# Opens the toolbox of an agent for one run (or one settlement of a paused run).
ToolboxFactory = Callable[[Agent], Awaitable[ToolboxLike]]
