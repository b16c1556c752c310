"""The composition root: builds and owns every long-lived service of a process.

API routes reach services through ``app.state.services``; the CLI builds the
same container (without the HTTP server) so management commands work before
the server ever starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from warden.tenancy import invalidation
from warden.tenancy.accounts import Accounts, bootstrap_admin
from warden.tenancy.budgets import Budgets
from warden.agents.registry import Agents
from warden.agents.runtime import Runs
from warden.agents.sessions import Sessions
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
from warden.state.base import BreakerConfig, StateUnavailable
from warden.store.spend import SpendWriter
from warden.store.db import Database
from warden.store.models import Credential
from warden.vault.keyring import Keyring

if TYPE_CHECKING:
    from warden.agents.tools.loader import ToolboxLoader

log = logging.getLogger("warden")


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    vault: Keyring  # seal/open/key_id like a Vault; several master keys during a rotation roll
    admin_key_path: Path | None = None
    _closers: list = field(default_factory=list)
    byok: Byok = field(init=False)
    model_groups: ModelGroups = field(init=False)
    state: StateStore = field(init=False)
    budgets: Budgets = field(init=False)
    spend: SpendWriter = field(init=False)
    gateway: Gateway = field(init=False)
    _tools: ToolboxLoader | None = field(default=None, init=False, repr=False)
    agents: Agents = field(init=False)
    sessions: Sessions = field(init=False)
    runs: Runs = field(init=False)
    policies: PolicyStore = field(init=False)
    maturity: Maturity = field(init=False)
    approvals: Approvals = field(init=False)
    feedback: FeedbackService = field(init=False)
    audit_log: AuditLog = field(init=False)

    @classmethod
    async def start(cls, settings: Settings, *, run_migrations: bool = True,
                    bootstrap: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.db_url)
        try:
            if run_migrations:
                # Imported here: alembic (~8 MB resident) stays out of a server
                # process whose database ``warden serve`` migrated before it started.
                from warden.store import migrate

                await migrate.upgrade(db)
            vault = await _open_vault(db, settings)
            accounts = Accounts(db, cache_ttl=settings.key_cache_ttl)
            services = cls(settings=settings, db=db, accounts=accounts, vault=vault)
            services.byok = Byok(db, vault)
            services._closers.append(services.byok.close)
            services.model_groups = ModelGroups(db)
            state_options: dict = {"breaker": BreakerConfig(
                settings.breaker_failures, settings.breaker_window, settings.breaker_cooldown)}
            if settings.redis_url is not None:
                state_options["prefix"] = settings.redis_prefix
            services.state = create_state(settings.redis_url, **state_options)
            services._closers.append(services.state.close)
            services.budgets = Budgets(db)
            await services._wire_invalidation()
            services.spend = SpendWriter(db)
            services.spend.start()
            services._closers.append(services.spend.close)
            services.gateway = Gateway(
                credentials=services.byok.resolved_credentials,
                groups=services.model_groups.for_workspace,
                state=services.state,
                catalog=get_catalog(),
                spend=services.spend.record,
                on_credential_used=services.byok.touch_last_used,
                limiter=Limiter(services.state, services.budgets.limits_for,
                                default_output_tokens=settings.reserve_output_tokens,
                                fail_open=settings.limits_fail_open),
                config=GatewayConfig(
                    max_retries=settings.max_retries,
                    deadline_s=settings.request_deadline,
                    timeouts=Timeouts(connect=settings.upstream_connect_timeout,
                                      first_byte=settings.upstream_first_byte_timeout,
                                      stream_gap=settings.upstream_stream_gap_timeout,
                                      total=settings.request_deadline),
                ),
            )
            services._closers.append(aclose_client)
            services._start_agents()
            await services._start_governance()
            await services.runs.start_background()  # sweeps runs a dead process left running
            services._closers.append(services.runs.close)
            services.approvals.start()  # expires overdue approvals, applies decisions a dead instance left
            services._closers.append(services.approvals.close)
            if bootstrap:
                services.admin_key_path = await bootstrap_admin(
                    accounts, settings.data_dir, settings.admin_key
                )
                if services.admin_key_path is not None:
                    log.warning("bootstrap admin key written to %s (mode 0600)", services.admin_key_path)
        except BaseException:
            if "services" in locals():
                await services.close()
            else:
                await db.close()
            raise
        return services

    @property
    def tools(self) -> ToolboxLoader:
        """The agents' tool stack (built-in tools, the MCP SDK: ~20 MB resident) is
        imported on first use, so a process that only serves the gateway never loads it."""
        if self._tools is None:
            from warden.agents.tools.loader import ToolboxLoader
            from warden.agents.tools.deps import ToolDeps

            self._tools = ToolboxLoader(ToolDeps.from_settings(self.settings, self.db))
        return self._tools

    def _check_mcp_servers(self, servers: list[dict[str, Any]], is_admin: bool) -> None:
        from warden.agents.tools.toolbox import validate_mcp_servers

        validate_mcp_servers(servers, is_admin=is_admin,
                             stdio_allow=self.settings.mcp_stdio_allow_list)

    def _start_agents(self) -> None:
        # Lambdas, not bound methods of ``self.tools``: the tool stack loads on first use.
        self.agents = Agents(self.db, check_tools=lambda names: self.tools.validate(names),
                             check_servers=self._check_mcp_servers)
        self.sessions = Sessions(self.db, self.agents)
        self.runs = Runs(self.db, self.gateway, self.agents, self.sessions,
                         toolbox_factory=lambda agent: self.tools(agent))

    async def _start_governance(self) -> None:
        """Policy, approvals, maturity, feedback and audit reading, hooked into the run loop."""
        st = self.settings
        self.policies = PolicyStore(self.db, cache_ttl=st.policy_cache_ttl)
        self.policies.notify = invalidation.publisher(self.state)
        try:
            self._closers.append(_sync_closer(await self.state.subscribe(self.policies.on_message)))
        except StateUnavailable:
            log.warning("shared state store unreachable at start; policy invalidation deferred")
        self.maturity = Maturity(self.db, self.policies, MaturityConfig.from_settings(
            st.promotion_min_runs, st.promotion_max_intervention, st.promotion_min_feedback, st.demotion_streak))
        self.approvals = Approvals(self.db, self.runs, self.maturity, ttl_s=st.approval_ttl,
                                   sweep_s=st.approval_sweep_interval)
        self.feedback = FeedbackService(self.db, self.runs, self.maturity)
        self.audit_log = AuditLog(self.db)
        self.runs.policy_source = self.policies.policy_for
        self.runs.hooks = GovernanceHooks(self.approvals, self.maturity)

    async def _wire_invalidation(self) -> None:
        """Changes are broadcast through the state store; every instance drops its copies."""
        notify = invalidation.publisher(self.state)
        for service in (self.accounts, self.byok, self.model_groups, self.budgets):
            service.notify = notify
        on_message = invalidation.dispatcher(accounts=self.accounts, byok=self.byok,
                                             model_groups=self.model_groups, budgets=self.budgets)
        try:
            self._closers.append(_sync_closer(await self.state.subscribe(on_message)))
        except StateUnavailable:
            # Registered anyway: delivery starts when the store comes back, and the
            # caches' TTLs bound staleness meanwhile.
            log.warning("shared state store unreachable at start; invalidation deferred")

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
        for closer in reversed(self._closers):
            await closer()
        await self.db.close()


def _sync_closer(unsubscribe):  # noqa: ANN001, ANN202 - Callable[[], None] -> async closer
    async def close() -> None:
        unsubscribe()

    return close


async def _open_vault(db: Database, settings: Settings) -> Keyring:
    """Load the master key(s), refusing to start if they cannot open existing secrets."""
    async with db.session() as s:
        key_ids = {k for k in (await s.execute(select(Credential.key_id).distinct())).scalars() if k}
    keyring = Keyring.load(settings.master_key, settings.data_dir, has_encrypted_data=bool(key_ids))
    keyring.check_opens(key_ids)
    return keyring
