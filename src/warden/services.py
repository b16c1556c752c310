"""The composition root: builds and owns every long-lived service of a process.

API routes reach services through ``app.state.services``; the CLI builds the
same container (without the HTTP server) so management commands work before
the server ever starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warden.tenancy import invalidation
from warden.tenancy.accounts import Accounts, bootstrap_admin
from warden.tenancy.budgets import Budgets
from warden.agents.agent_cache import AgentCache
from warden.agents.registry import Agents
from warden.agents.runs import Runs, RuntimeConfig
from warden.agents.sessions import Sessions
from warden.agents.tools.loader import ToolboxLoader
from warden.tenancy.credentials import Byok
from warden.config import Settings
from warden.gateway.catalog import get_catalog
from warden.gateway.gateway import Gateway, GatewayConfig
from warden.gateway.health import HealthTracker
from warden.gateway.limits import Limiter
from warden.gateway.types import Timeouts
from warden.netpolicy import AddressPolicy
from warden.governance.approvals import Approvals
from warden.governance.gate import Gate
from warden.governance.holds import Holds
from warden.governance.audit_log import AuditLog
from warden.governance.feedback import FeedbackService
from warden.governance.hooks import GovernanceHooks
from warden.governance.maturity import Maturity, MaturityConfig
from warden.governance.policy_store import PolicyStore
from warden.gateway.providers.http import aclose_client
from warden.tenancy.model_aliases import ModelAliases
from warden.tenancy.model_groups import ModelGroups
from warden.tenancy.responses import StoredResponses
from warden.tenancy.budget_alerts import BudgetAlerts
from warden.tenancy.webhook_delivery import DeliveryConfig, WebhookWorker
from warden.tenancy.webhooks import Webhooks
from warden.tenancy.vault_open import open_vault
from warden.logs import register_secret
from warden import tracing
from warden.state import StateStore, create_state
from warden.state.base import BreakerConfig, InvalidationCallback, StateUnavailable
from warden.state.memory import MemoryState
from warden.store.checkpoints import Checkpointer
from warden.store.spend import SpendWriter
from warden.store.spend_sealer import SpendSealer
from warden.store.db import Database, private_dir
from warden.vault.keyring import Keyring, load_audit_signing_key

if TYPE_CHECKING:
    from warden.agents.tools.deps import ToolDeps
    from warden.mcpgate.gateway import McpGateway
    from warden.mcpgate.servers import WorkspaceServers

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
    model_aliases: ModelAliases
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
    gate: Gate  # the decision point for external agents' tool calls (governance/gate.py)
    feedback: FeedbackService
    audit_log: AuditLog
    responses: StoredResponses
    webhooks: Webhooks
    admin_key_path: Path | None
    _mcp_build: Callable[[], tuple[WorkspaceServers, McpGateway]] = field(repr=False)
    _exit: contextlib.AsyncExitStack = field(repr=False)
    _mcp: tuple[WorkspaceServers, McpGateway] | None = field(default=None, repr=False)

    @property
    def mcp_servers(self) -> WorkspaceServers:
        """Workspace MCP servers for /mcp (mcpgate/servers.py); built on first use."""
        return self._mcp_parts()[0]

    @property
    def mcp_gateway(self) -> McpGateway:
        """What /mcp serves (mcpgate/gateway.py); built on first use."""
        return self._mcp_parts()[1]

    def _mcp_parts(self) -> tuple[WorkspaceServers, McpGateway]:
        if self._mcp is None:
            self._mcp = self._mcp_build()
        return self._mcp

    @classmethod
    async def start(cls, settings: Settings, *, run_migrations: bool = True,
                    bootstrap: bool = True, serving: bool = True) -> Services:
        """Build every service in layer order, bottom up; each closer runs in reverse at close.
        ``serving``: this process carries runs on (resumes decided ones, takes over the runs
        of dead instances, sweeps); a management command's process passes False, so a
        decision it records is carried out by a server, with the server's settings."""
        private_dir(settings.data_dir)
        db = Database(settings.db_url)
        exit_stack = contextlib.AsyncExitStack()
        exit_stack.push_async_callback(db.close)
        try:
            return await cls._build(settings, db, exit_stack, run_migrations=run_migrations,
                                    bootstrap=bootstrap, serving=serving)
        except BaseException:
            await exit_stack.aclose()
            raise

    @classmethod
    async def _build(cls, settings: Settings, db: Database, exit_stack: contextlib.AsyncExitStack, *,
                     run_migrations: bool, bootstrap: bool, serving: bool = True) -> Services:
        st = settings
        on_close = exit_stack.push_async_callback
        if serving and tracing.configure():  # OTEL_EXPORTER_OTLP_ENDPOINT is set
            on_close(asyncio.to_thread, tracing.release)  # early, so it flushes last
        if run_migrations:
            # Imported here: alembic (~8 MB resident) stays out of a server
            # process whose database ``warden serve`` migrated before it started.
            from warden.store import migrate

            await migrate.upgrade(db)
        vault = await open_vault(db, st)
        state = create_state(st.redis_url, breaker=BreakerConfig(
            st.breaker_failures, st.breaker_window, st.breaker_cooldown),
            **({"prefix": st.redis_prefix} if st.redis_url is not None else {}))
        on_close(state.close)
        # Signed checkpoints of the audit chain, outside the database (store/checkpoints.py);
        # built early so it closes late, signing what every other service wrote.
        checkpointer = Checkpointer(db, load_audit_signing_key(st.audit_signing_key, st.data_dir),
                                    st.audit_checkpoint_path, interval=st.audit_checkpoint_interval,
                                    every=st.audit_checkpoint_events)
        checkpointer.start()
        on_close(checkpointer.close)
        # Spend rows sealed into the chain off the request path (store/spend_sealer.py); its
        # close comes after the spend writer's flush and before the checkpointer's signature.
        spend_sealer = SpendSealer(db, interval=st.spend_seal_interval)
        if serving:
            spend_sealer.start()
        on_close(spend_sealer.close)

        # Tenancy: every cache's changes are broadcast through the state store.
        notify = invalidation.publisher(state)
        accounts = Accounts(db, cache_ttl=st.key_cache_ttl, notify=notify)
        byok = Byok(db, vault, notify=notify, egress=AddressPolicy.from_entries(st.egress_allow_list))
        on_close(byok.cache.close)
        model_groups = ModelGroups(db, notify=notify)
        model_aliases = ModelAliases(db, notify=notify)
        budgets = Budgets(db, notify=notify)
        if isinstance(state, MemoryState):  # Redis keeps its counters; this store starts empty
            await _restore_budget_counters(budgets, state)
        policies = PolicyStore(db, cache_ttl=st.policy_cache_ttl, notify=notify)
        await _subscribe(state, on_close, invalidation.dispatcher(
            accounts=accounts, byok=byok.cache, model_groups=model_groups, budgets=budgets))
        await _subscribe(state, on_close, policies.on_message)
        await _subscribe(state, on_close, model_aliases.on_message)

        # Gateway.
        spend = SpendWriter(db, commit_wait=st.spend_commit_wait)
        spend.start()
        on_close(spend.close)
        gateway = Gateway(
            credentials=byok.cache.resolved_credentials,
            groups=model_groups.for_workspace,
            aliases=model_aliases.resolve,
            state=state,
            catalog=get_catalog(),
            spend=spend.record,
            on_credential_used=byok.cache.touch_last_used,
            limiter=Limiter(state, budgets.limits_for, default_output_tokens=st.reserve_output_tokens,
                            fail_open=st.limits_fail_open),
            health=HealthTracker(half_life_s=st.health_half_life),
            config=GatewayConfig(
                max_retries=st.max_retries,
                max_attempts=st.max_attempts,
                endpoint_max_attempts=st.endpoint_max_attempts,
                endpoint_cooldown_s=st.endpoint_cooldown,
                fallback_cost_factor=st.fallback_cost_factor or None,
                deadline_s=st.request_deadline,
                timeouts=Timeouts(connect=st.upstream_connect_timeout,
                                  first_byte=st.upstream_first_byte_timeout,
                                  stream_gap=st.upstream_stream_gap_timeout,
                                  total=st.request_deadline,
                                  max_reply_bytes=st.upstream_max_reply_bytes,
                                  max_event_bytes=st.upstream_max_event_bytes),
            ),
        )
        on_close(aclose_client)

        # Agents, and the governance their runs are built with (policy source and hooks).
        tools = ToolboxLoader(lambda: _tool_deps(st, db), mcp_stdio_allow=st.mcp_stdio_allow_list)
        agent_cache = AgentCache(db, ttl=st.key_cache_ttl, notify=notify)  # as keys: a bound key acts as it
        await _subscribe(state, on_close, agent_cache.on_message)
        agents = Agents(db, check_tools=tools.validate, check_servers=tools.check_servers,
                        forget_keys=accounts.forget_everywhere, forget_agent=agent_cache.forget_everywhere)
        sessions = Sessions(db, agents)
        maturity = Maturity(db, policies, MaturityConfig.from_settings(
            st.promotion_min_runs, st.promotion_max_intervention, st.promotion_min_feedback, st.demotion_streak),
            agents=agent_cache)
        runs = Runs(db, gateway, agents, sessions, toolbox_factory=tools,
                    policy_source=policies.policy_for,
                    hooks=GovernanceHooks(maturity, approval_ttl_s=st.approval_ttl),
                    config=RuntimeConfig(lease_s=st.run_lease, heartbeat_s=st.run_lease / 3,
                                         sweep_every_s=st.run_sweep_interval),
                    publish=notify)
        approvals = Approvals(db, runs, maturity, policies, ttl_s=st.approval_ttl,
                              sweep_s=st.approval_sweep_interval, serving=serving, publish=notify)
        if serving:  # leases, takeovers and decisions are carried on by serving instances only
            await runs.start_background()  # takes over runs a dead process left
            approvals.start()  # expires overdue approvals, applies decisions nobody carried out
            await _subscribe(state, on_close, runs.on_message)
            await _subscribe(state, on_close, approvals.on_message)
        on_close(runs.close)
        on_close(approvals.close)
        holds = Holds(db, poll_s=st.approval_hold_poll, publish=notify)
        gate = Gate(db, policies, maturity, approvals, holds, hold_s=st.approval_hold, approval_ttl_s=st.approval_ttl,
                    agents=agent_cache)
        await _subscribe(state, on_close, holds.on_message)  # a decision on another instance releases holders
        on_close(holds.close)
        feedback = FeedbackService(db, runs, maturity)
        built_mcp: list[McpGateway] = []

        def build_mcp() -> tuple[WorkspaceServers, McpGateway]:
            # Imported on first use, not at start: the MCP gateway brings the MCP SDK
            # (~22 MB resident, ~0.4 s of start-up) that a gateway-only process never runs.
            from warden.mcpgate.gateway import McpGateway
            from warden.mcpgate.pool import UpstreamPool
            from warden.mcpgate.servers import WorkspaceServers

            servers = WorkspaceServers(db, tools.check_servers)
            # Its upstream connections are shared by requests, closed when idle and at close.
            built_mcp.append(McpGateway(gate, UpstreamPool(lambda: tools.deps, idle_s=st.mcp_idle_close),
                                        db, lambda: tools.deps, policies.policy_for, servers=servers))
            return servers, built_mcp[0]

        async def close_mcp() -> None:
            for mcp_gateway in built_mcp:
                await mcp_gateway.pool.close()

        on_close(close_mcp)
        egress = AddressPolicy.from_entries(st.egress_allow_list)
        webhooks = Webhooks(db, vault, egress=egress)
        if serving:  # sends due deliveries and looks for crossed budget thresholds
            worker = WebhookWorker(db, vault, egress=egress, also=BudgetAlerts(db, budgets, state).check,
                                   config=DeliveryConfig(max_attempts=st.webhook_max_attempts,
                                                         timeout_s=st.webhook_timeout,
                                                         poll_s=st.webhook_poll_interval,
                                                         backoff_s=st.webhook_backoff))
            worker.start()
            on_close(worker.close)

        admin_key_path = None
        if bootstrap:
            admin_key_path = await bootstrap_admin(accounts, st.data_dir, st.admin_key)
            if admin_key_path is not None:
                log.warning("bootstrap admin key written to %s (mode 0600)", admin_key_path)
        _register_process_secrets(st)
        return cls(settings=st, db=db, vault=vault, state=state, accounts=accounts, byok=byok,
                   model_groups=model_groups, model_aliases=model_aliases, budgets=budgets,
                   spend=spend, gateway=gateway, tools=tools,
                   agents=agents, sessions=sessions, policies=policies, maturity=maturity, runs=runs,
                   approvals=approvals, gate=gate, feedback=feedback, _mcp_build=build_mcp,
                   audit_log=AuditLog(db, checkpointer, spend_sealer),
                   responses=StoredResponses(db, ttl_s=st.responses_ttl), webhooks=webhooks,
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


async def _restore_budget_counters(budgets: Budgets, state: MemoryState) -> None:
    """Start every budget's current-period counter at what the spend ledger holds, so a
    restart never re-grants spent money. Reservations of requests that did not finish
    died with their process: they wrote no ledger row, so nothing of them is restored."""
    started = time.perf_counter()
    counters = await budgets.ledger_counters()
    for counter, spent in counters:
        state.restore_spent(counter, spent)
    if counters:
        log.info("budget counters rebuilt from the spend ledger: %d in %.0f ms", len(counters),
                 (time.perf_counter() - started) * 1000)


def _register_process_secrets(settings: Settings) -> None:
    """Have the log redactor remove the bootstrap admin key and the master key(s) by value
    (provider keys are registered as they are opened: tenancy/credential_cache.py)."""
    register_secret("admin_key", settings.admin_key)
    admin_file = settings.data_dir / "admin.key"
    if settings.admin_key is None and admin_file.exists():
        register_secret("admin_key", admin_file.read_text().strip())
    if settings.master_key:
        texts = settings.master_key.split(",")
    else:
        key_file = settings.data_dir / "master.key"
        texts = key_file.read_text().split() if key_file.exists() else []
    for i, text in enumerate(texts):
        register_secret(f"master_key:{i}", text.strip())


def _tool_deps(settings: Settings, db: Database) -> ToolDeps:
    # Imported on first use: the egress policy brings httpx, which a gateway-only process never needs.
    from warden.agents.tools.deps import ToolDeps

    return ToolDeps.from_settings(settings, db)
