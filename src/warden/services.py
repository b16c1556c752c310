"""The composition root: builds and owns every long-lived service of a process.

API routes reach services through ``app.state.services``; the CLI builds the
same container (without the HTTP server) so management commands work before
the server ever starts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from warden.tenancy import invalidation
from warden.tenancy.accounts import Accounts, bootstrap_admin
from warden.tenancy.budgets import Budgets
from warden.agents.registry import Agents
from warden.agents.runs import Runs
from warden.agents.sessions import Sessions
from warden.agents.tools.loader import ToolboxLoader
from warden.tenancy.credentials import Byok
from warden.config import Settings
from warden.gateway.catalog import get_catalog
from warden.gateway.gateway import Gateway, GatewayConfig
from warden.gateway.limits import Limiter
from warden.gateway.types import Timeouts
from warden.governance.approvals import Approvals
from warden.governance.audit_log import AuditLog
from warden.governance.feedback import FeedbackService
from warden.governance.hooks import GovernanceHooks
from warden.governance.maturity import Maturity, MaturityConfig
from warden.governance.policy_store import PolicyStore
from warden.gateway.providers.http import aclose_client
from warden.tenancy.model_groups import ModelGroups
from warden.state import StateStore, create_state
from warden.state.base import BreakerConfig, InvalidationCallback, StateUnavailable
from warden.store.spend import SpendWriter
from warden.store.db import Database
from warden.store.models import Credential
from warden.vault.keyring import Keyring

if TYPE_CHECKING:
    from warden.agents.tools.deps import ToolDeps

log = logging.getLogger("warden")


@dataclass(slots=True)
class Services:
    """Every long-lived service of the process, each fully built before this exists."""

    settings: Settings
    db: Database
    vault: Keyring  # seal/open/key_id like a Vault; several master keys during a rotation roll
    state: StateStore
    accounts: Accounts
    byok: Byok
    model_groups: ModelGroups
    budgets: Budgets
    spend: SpendWriter
    gateway: Gateway
    tools: ToolboxLoader
    agents: Agents
    sessions: Sessions
    policies: PolicyStore
    maturity: Maturity
    runs: Runs
    approvals: Approvals
    feedback: FeedbackService
    audit_log: AuditLog
    admin_key_path: Path | None
    _exit: contextlib.AsyncExitStack = field(repr=False)

    @classmethod
    async def start(cls, settings: Settings, *, run_migrations: bool = True,
                    bootstrap: bool = True) -> Services:
        """Build every service in layer order, bottom up; each closer runs in reverse at close."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.db_url)
        exit_stack = contextlib.AsyncExitStack()
        exit_stack.push_async_callback(db.close)
        try:
            return await cls._build(settings, db, exit_stack, run_migrations=run_migrations,
                                    bootstrap=bootstrap)
        except BaseException:
            await exit_stack.aclose()
            raise

    @classmethod
    async def _build(cls, settings: Settings, db: Database, exit_stack: contextlib.AsyncExitStack, *,
                     run_migrations: bool, bootstrap: bool) -> Services:
        st = settings
        on_close = exit_stack.push_async_callback
        if run_migrations:
            # Imported here: alembic (~8 MB resident) stays out of a server
            # process whose database ``warden serve`` migrated before it started.
            from warden.store import migrate

            await migrate.upgrade(db)
        vault = await _open_vault(db, st)
        state = create_state(st.redis_url, breaker=BreakerConfig(
            st.breaker_failures, st.breaker_window, st.breaker_cooldown),
            **({"prefix": st.redis_prefix} if st.redis_url is not None else {}))
        on_close(state.close)

        # Tenancy: every cache's changes are broadcast through the state store.
        notify = invalidation.publisher(state)
        accounts = Accounts(db, cache_ttl=st.key_cache_ttl, notify=notify)
        byok = Byok(db, vault, notify=notify)
        on_close(byok.cache.close)
        model_groups = ModelGroups(db, notify=notify)
        budgets = Budgets(db, notify=notify)
        policies = PolicyStore(db, cache_ttl=st.policy_cache_ttl, notify=notify)
        await _subscribe(state, on_close, invalidation.dispatcher(
            accounts=accounts, byok=byok.cache, model_groups=model_groups, budgets=budgets))
        await _subscribe(state, on_close, policies.on_message)

        # Gateway.
        spend = SpendWriter(db)
        spend.start()
        on_close(spend.close)
        gateway = Gateway(
            credentials=byok.cache.resolved_credentials,
            groups=model_groups.for_workspace,
            state=state,
            catalog=get_catalog(),
            spend=spend.record,
            on_credential_used=byok.cache.touch_last_used,
            limiter=Limiter(state, budgets.limits_for, default_output_tokens=st.reserve_output_tokens,
                            fail_open=st.limits_fail_open),
            config=GatewayConfig(
                max_retries=st.max_retries,
                deadline_s=st.request_deadline,
                timeouts=Timeouts(connect=st.upstream_connect_timeout,
                                  first_byte=st.upstream_first_byte_timeout,
                                  stream_gap=st.upstream_stream_gap_timeout,
                                  total=st.request_deadline),
            ),
        )
        on_close(aclose_client)

        # Agents, and the governance their runs are built with (policy source and hooks).
        tools = ToolboxLoader(lambda: _tool_deps(st, db), mcp_stdio_allow=st.mcp_stdio_allow_list)
        agents = Agents(db, check_tools=tools.validate, check_servers=tools.check_servers)
        sessions = Sessions(db, agents)
        maturity = Maturity(db, policies, MaturityConfig.from_settings(
            st.promotion_min_runs, st.promotion_max_intervention, st.promotion_min_feedback, st.demotion_streak))
        runs = Runs(db, gateway, agents, sessions, toolbox_factory=tools,
                    policy_source=policies.policy_for,
                    hooks=GovernanceHooks(maturity, approval_ttl_s=st.approval_ttl))
        await runs.start_background()  # sweeps runs a dead process left running
        on_close(runs.close)
        approvals = Approvals(db, runs, maturity, ttl_s=st.approval_ttl, sweep_s=st.approval_sweep_interval)
        approvals.start()  # expires overdue approvals, applies decisions a dead instance left
        on_close(approvals.close)
        feedback = FeedbackService(db, runs, maturity)

        admin_key_path = None
        if bootstrap:
            admin_key_path = await bootstrap_admin(accounts, st.data_dir, st.admin_key)
            if admin_key_path is not None:
                log.warning("bootstrap admin key written to %s (mode 0600)", admin_key_path)
        return cls(settings=st, db=db, vault=vault, state=state, accounts=accounts, byok=byok,
                   model_groups=model_groups, budgets=budgets, spend=spend, gateway=gateway, tools=tools,
                   agents=agents, sessions=sessions, policies=policies, maturity=maturity, runs=runs,
                   approvals=approvals, feedback=feedback, audit_log=AuditLog(db),
                   admin_key_path=admin_key_path, _exit=exit_stack)

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state, for ``/readyz``: "ok" or why not."""
        return {
            "database": "ok" if await self.db.ping() else "unreachable",
            "state": "ok" if await self.state.ping() else "unreachable",
        }

    def backends(self) -> dict[str, str]:
        """What each dependency of :meth:`readiness` is, so ``/readyz`` can name it."""
        return {"database": "sqlite" if self.db.is_sqlite else "postgresql",
                "state": "memory" if self.settings.redis_url is None else "redis"}

    async def close(self) -> None:
        await self._exit.aclose()


async def _subscribe(state: StateStore, on_close: Callable[..., Any],
                     callback: InvalidationCallback) -> None:
    """Drop local copies when another instance changes something."""
    try:
        unsubscribe = await state.subscribe(callback)
    except StateUnavailable:
        # Delivery starts when the store comes back; the caches' TTLs bound staleness meanwhile.
        log.warning("shared state store unreachable at start; invalidation deferred")
        return

    async def close() -> None:
        unsubscribe()

    on_close(close)


def _tool_deps(settings: Settings, db: Database) -> ToolDeps:
    # Imported on first use: the egress policy brings httpx, which a gateway-only process never needs.
    from warden.agents.tools.deps import ToolDeps

    return ToolDeps.from_settings(settings, db)


async def _open_vault(db: Database, settings: Settings) -> Keyring:
    """Load the master key(s), refusing to start if they cannot open existing secrets."""
    async with db.session() as s:
        key_ids = {k for k in (await s.execute(select(Credential.key_id).distinct())).scalars() if k}
    keyring = Keyring.load(settings.master_key, settings.data_dir, has_encrypted_data=bool(key_ids))
    keyring.check_opens(key_ids)
    return keyring
