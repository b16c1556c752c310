"""Settings from ``WARDEN_*`` environment variables, validated once at start."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warden.errors import ConfigError


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
        # "new,old": several keys during a rotation roll (see keyring.py); the first seals.
        for part in v.split(","):
            try:
                raw = base64.b64decode(part.strip(), validate=True)
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

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return v

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
        field = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"WARDEN_{field.upper()}: {err['msg']}") from None
