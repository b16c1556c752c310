"""Settings from ``WARDEN_*`` environment variables, validated once at start."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from functools import cached_property
from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warden.errors import ConfigError, field_path

_HOSTNAME = re.compile(r"(?i)[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?\.?")


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the shape of list-valued variables."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _looks_like_ip(entry: str) -> bool:
    return ":" in entry or entry.replace(".", "").isdigit()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARDEN_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local/share/warden")
    database_url: str | None = None
    redis_url: str | None = None
    master_key: str | None = None
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"
    # Upper bound on any request body, in bytes (413 above it).
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Seconds an API-key lookup stays cached in memory (revocations by this
    # instance are honoured at once; other instances within this bound).
    key_cache_ttl: float = Field(default=3.0, ge=0)
    access_log: bool = True
    # Hosts or CIDRs ("intranet.example, 10.0.0.0/8, 127.0.0.1") that agent HTTP/MCP
    # tools and the provider URLs of workspaces other than "default" may reach
    # although private, loopback or link-local. Comma-separated.
    egress_allow: str = ""
    # Executables an admin may start as stdio MCP servers ("npx, /usr/local/bin/mcp-git").
    # Empty: no stdio server may start. Comma-separated.
    mcp_stdio_allow: str = ""
    # Upstream calls (seconds): connecting, until the first byte, longest silence
    # inside a stream, and the whole request across every retry and failover.
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_first_byte_timeout: float = Field(default=60.0, gt=0)
    upstream_stream_gap_timeout: float = Field(default=30.0, gt=0)
    request_deadline: float = Field(default=300.0, gt=0)
    # Upstream replies (bytes): a whole non-stream reply, and one stream line or event.
    # Larger ones are refused (502 upstream_reply_too_large), never read into memory.
    upstream_max_reply_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
    upstream_max_event_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    max_retries: int = Field(default=2, ge=0, le=10)  # per deployment, retryable errors only
    # Circuit breaker per deployment: open after N failures within the window,
    # probe again after the cooldown.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_window: float = Field(default=30.0, gt=0)
    breaker_cooldown: float = Field(default=15.0, gt=0)
    # Failover bounds for one request: attempts over its whole plan and on one endpoint
    # (host + credential), retries included. An endpoint that cannot be reached at all
    # (refused, DNS, TLS, connect timeout) is skipped for this long, then probed.
    max_attempts: int = Field(default=6, ge=1, le=50)
    endpoint_max_attempts: int = Field(default=3, ge=1, le=50)
    endpoint_cooldown: float = Field(default=5.0, gt=0)
    # Seconds in which a deployment's recent error rate halves (ranking only).
    health_half_life: float = Field(default=10.0, gt=0)
    # Cost guard: failover never moves to a step whose estimated cost is more than this
    # many times the first choice's (a request may raise it); 0: no guard.
    fallback_cost_factor: float = Field(default=4.0, ge=0)
    # Budgets and rate limits when the state store (or the database behind the
    # budgets) is down: refuse with 503 (default) or let requests through unmetered.
    limits_fail_open: bool = False
    # Output tokens reserved against budgets for a request without max_tokens
    # (capped by the model's own max output).
    reserve_output_tokens: int = Field(default=4096, ge=1)
    # Longest a finished request waits for its spend row to be committed before its
    # response ends (group commit); 0: the old batched writer, a kill -9 may lose rows.
    spend_commit_wait: float = Field(default=5.0, ge=0, le=60)
    # Key prefix in Redis, so several deployments (or test runs) can share one server.
    redis_prefix: str = Field(default="warden:", min_length=1, max_length=64)
    # Governance. A pending approval expires (treated as a rejection) after this
    # many seconds; expiries are swept this often (and whenever approvals are read).
    approval_ttl: float = Field(default=86400.0, gt=0)
    approval_sweep_interval: float = Field(default=30.0, gt=0)
    # An external agent's call that needs approval is held this many seconds
    # (0: answer ``pending`` at once); its holders are re-checked this often.
    approval_hold: float = Field(default=120.0, ge=0)
    approval_hold_poll: float = Field(default=3.0, gt=0)
    # The MCP gateway (/mcp, mcpgate/): an upstream MCP server connection unused this many
    # seconds is closed (a stdio server's process ends); the next call starts it again.
    mcp_idle_close: float = Field(default=300.0, gt=0)
    # Outbound webhooks (tenancy/webhooks.py): attempts per delivery before it is given
    # up, seconds per attempt, and how often a serving instance looks for due deliveries
    # and crossed budget thresholds.
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_timeout: float = Field(default=10.0, gt=0, le=300)
    webhook_poll_interval: float = Field(default=2.0, gt=0, le=300)
    webhook_backoff: float = Field(default=5.0, gt=0, le=3600)  # the first retry's delay, doubled each time
    # The web console at /ui (console/): on by default; a console sign-in lasts this many
    # seconds (and ends sooner when its key is revoked or the user signs out).
    console: bool = True
    console_session_ttl: float = Field(default=12 * 3600.0, gt=0)
    # Seconds a Responses API response kept with `store: true` can be read and continued
    # (`previous_response_id`); 30 days, as OpenAI keeps them.
    responses_ttl: float = Field(default=30 * 86400.0, gt=0)
    # Runs (agents/runs/recovery.py): a serving instance holds a lease on each run it
    # executes, renewed every third of this; once expired, another instance takes the
    # run over. The sweep that does so (and finds decided actions nobody carried out)
    # runs this often.
    run_lease: float = Field(default=30.0, gt=0)
    run_sweep_interval: float = Field(default=10.0, gt=0)
    # Seconds a workspace's governance policy stays cached (changes reach other
    # instances at once through the state store; this bounds a lost message).
    policy_cache_ttl: float = Field(default=3.0, ge=0)
    # Maturity, one value per tier below autonomous (student, intern, supervised):
    # runs needed before promotion, and the highest intervention rate
    # ((rejections + corrections) / runs) tolerated.
    promotion_min_runs: str = "10,25,50"
    promotion_max_intervention: str = "0.5,0.2,0.05"
    # Ratings needed before promotion (volume without any human signal never promotes).
    promotion_min_feedback: int = Field(default=1, ge=0)
    # Failed runs or rejected actions in a row that demote an agent one tier.
    demotion_streak: int = Field(default=3, ge=1)
    # Audit checkpoints (store/checkpoints.py): the Ed25519 signing key (base64 of its
    # 32-byte seed; default <data dir>/audit-signing.key), the append-only file they go
    # to (default <data dir>/audit-checkpoints.jsonl), and how often the head is signed:
    # every N seconds when it moved, and as soon as N events arrived.
    audit_signing_key: str | None = None
    audit_checkpoint_file: Path | None = None
    audit_checkpoint_interval: float = Field(default=60.0, gt=0)
    audit_checkpoint_events: int = Field(default=100, ge=1)
    # How often spend rows are sealed into the audit chain (store/spend_sealer.py), seconds.
    spend_seal_interval: float = Field(default=1.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("master_key")
    @classmethod
    def _master_key_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # "new,old": several keys during a rotation roll (see vault/keyring.py); the first seals.
        for part in v.split(","):
            try:
                raw = base64.b64decode(part.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64") from None
            if len(raw) != 32:
                raise ValueError("must be the base64 of exactly 32 bytes")
        return v

    @field_validator("audit_signing_key")
    @classmethod
    def _signing_key_shape(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                raw = base64.b64decode(v.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64") from None
            if len(raw) != 32:
                raise ValueError("must be the base64 of exactly 32 bytes")
        return v

    @field_validator("admin_key")
    @classmethod
    def _admin_key_shape(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("wk-") or len(v) < 24):
            raise ValueError("must start with 'wk-' and be at least 24 characters")
        return v

    @field_validator("workers")
    @classmethod
    def _workers_share_state(cls, v: int, info: ValidationInfo) -> int:
        # The in-process state is per process: each worker would keep its own rate
        # limits, budgets, breakers and caches, multiplying every limit by N.
        if v > 1 and "redis_url" in info.data and info.data["redis_url"] is None:
            raise ValueError(f"{v} worker processes need WARDEN_REDIS_URL (without it each worker "
                             "would keep its own budgets, rate limits and caches); set "
                             "WARDEN_REDIS_URL or WARDEN_WORKERS=1")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return v

    @field_validator("egress_allow")
    @classmethod
    def _egress_entries(cls, v: str) -> str:
        for entry in split_list(v):
            if "/" in entry or _looks_like_ip(entry):
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not a valid IP address or CIDR") from None
            elif not _HOSTNAME.fullmatch(entry):
                raise ValueError(f"{entry!r} is not a valid host name")
        return v

    @field_validator("mcp_stdio_allow")
    @classmethod
    def _stdio_entries(cls, v: str) -> str:
        for entry in split_list(v):
            if any(c.isspace() for c in entry):
                raise ValueError(f"{entry!r}: one executable per entry, without arguments")
        return v

    @field_validator("promotion_min_runs")
    @classmethod
    def _three_counts(cls, v: str) -> str:
        parts = split_list(v)
        if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise ValueError("must be three positive whole numbers (student, intern, supervised)")
        return v

    @field_validator("promotion_max_intervention")
    @classmethod
    def _three_rates(cls, v: str) -> str:
        try:
            rates = [float(p) for p in split_list(v)]
        except ValueError:
            rates = []
        if len(rates) != 3 or not all(0 <= r <= 1 for r in rates):
            raise ValueError("must be three rates between 0 and 1 (student, intern, supervised)")
        return v

    @property
    def egress_allow_list(self) -> list[str]:
        return split_list(self.egress_allow)

    @property
    def mcp_stdio_allow_list(self) -> list[str]:
        return split_list(self.mcp_stdio_allow)

    @property
    def audit_checkpoint_path(self) -> Path:
        return self.audit_checkpoint_file or self.data_dir / "audit-checkpoints.jsonl"

    @property
    def address_file(self) -> Path:
        """Where a running server writes its address (``warden.server``) for the CLI to find."""
        return self.data_dir / "server.json"

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'warden.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a validation failure into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = field_path(err["loc"][:1], "?")
        raise ConfigError(f"WARDEN_{field.upper()}: {err['msg']}") from None
