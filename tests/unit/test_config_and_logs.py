from __future__ import annotations

import io
import json
import logging

import pytest

from warden.config import load_settings
from warden.errors import ConfigError
from warden.logs import configure_logging, redact, request_id_var


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("WARDEN_PORT", "99999", "WARDEN_PORT"),
        ("WARDEN_PORT", "http", "WARDEN_PORT"),
        ("WARDEN_DATABASE_URL", "mysql://x", "WARDEN_DATABASE_URL"),
        ("WARDEN_REDIS_URL", "http://x", "WARDEN_REDIS_URL"),
        ("WARDEN_MASTER_KEY", "not base64!!", "WARDEN_MASTER_KEY"),
        ("WARDEN_MASTER_KEY", "c2hvcnQ=", "WARDEN_MASTER_KEY"),
        ("WARDEN_ADMIN_KEY", "sk-abc", "WARDEN_ADMIN_KEY"),
        ("WARDEN_LOG_LEVEL", "loud", "WARDEN_LOG_LEVEL"),
    ],
)
def test_bad_variable_is_named_in_one_line(monkeypatch, env, value, needle) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert msg.startswith(needle + ":") and "\n" not in msg


def test_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)
    assert s.db_url == f"sqlite+aiosqlite:///{tmp_path / 'warden.db'}" and s.is_sqlite
    monkeypatch.setenv("WARDEN_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert not load_settings().is_sqlite


@pytest.mark.parametrize(
    "secret",
    [
        "wk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "sk-proj-abcdefghijklmnop1234",
        "sk-ant-api03-abcdefghijklmnop",
        "AIzaSyA1234567890abcdefghijklmnopq",
        "gsk_abcdefghijklmnopqrstuvwx",
    ],
)
def test_redact_hides_key_shapes(secret: str) -> None:
    assert secret not in redact(f"calling with {secret} now")
    assert "Bearer [REDACTED]" == redact(f"Bearer {secret}")


def test_json_logs_carry_request_id_and_redact() -> None:
    buf = io.StringIO()
    configure_logging("debug", stream=buf)
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("warden.test").info("upstream said %s", "key sk-abcdefghijklmnopqrstu bad")
        try:
            raise ValueError("boom with wk-abcdefghijklmnopqrstuvwxyz")
        except ValueError:
            logging.getLogger("warden.test").exception("failed")
    finally:
        request_id_var.reset(token)
        configure_logging("info")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["request_id"] == "req-42" and lines[0]["level"] == "INFO"
    assert "sk-abcdefghijklmnopqrstu" not in buf.getvalue()
    assert "wk-abcdefghijklmnopqrstuvwxyz" not in buf.getvalue()
    assert "[REDACTED]" in lines[0]["message"] and "exc_info" in lines[1]


def test_several_workers_need_redis() -> None:
    """Issue 13, item 4: without Redis each worker would keep its own limits, budgets,
    breakers and caches (rpm 10 admitted 20 with two workers); refuse instead."""
    with pytest.raises(ConfigError) as exc:
        load_settings(workers=2)
    msg = str(exc.value)
    assert msg.startswith("WARDEN_WORKERS:") and "WARDEN_REDIS_URL" in msg and "\n" not in msg
    assert load_settings(workers=2, redis_url="redis://127.0.0.1:6379/0").workers == 2
    assert load_settings(workers=1).workers == 1
    with pytest.raises(ConfigError, match="^WARDEN_REDIS_URL:"):  # a bad URL is named, not the workers
        load_settings(workers=2, redis_url="http://x")
