"""`warden keys create --budget/--rpm/--tpm`, and the invalidation broadcast."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY
from warden.tenancy import invalidation
from warden.tenancy.budgets import RateLimitsSpec
from warden.cli import app
from warden.config import load_settings
from warden.services import Services
from warden.state.base import FLUSH_ALL

runner = CliRunner()


def test_keys_create_with_budget_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDEN_ADMIN_KEY", ADMIN_KEY)
    assert runner.invoke(app, ["migrate"]).exit_code == 0  # a command never creates the database itself
    r = runner.invoke(app, ["keys", "create", "--name", "bot", "--budget", "10/month", "--rpm", "60",
                            "--tpm", "1000"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    raw = r.stdout.strip().splitlines()[-1]
    assert raw.startswith("wk-")

    async def check() -> None:
        svc = await Services.start(load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY))
        try:
            principal = await svc.accounts.authenticate(raw)
            assert (principal.rpm_limit, principal.tpm_limit) == (60, 1000)
            (row,) = await svc.budgets.list(principal.workspace_id)
            assert (row.scope, row.scope_id, row.period) == ("key", principal.key_id, "month")
            assert Decimal(row.limit_usd) == 10
        finally:
            await svc.close()

    asyncio.run(check())
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--budget", "ten"])
    assert bad.exit_code == 2 and "10/month" in bad.output


async def test_broadcast_drops_every_cache(services: Services) -> None:
    ws = (await services.accounts.workspace_by_name("default")).id
    seen: list[tuple[str, str]] = []
    unsubscribe = await services.state.subscribe(lambda t, k: seen.append((t, k)))
    await services.budgets.limits_for(ws)
    assert ws in services.budgets._cache
    await services.budgets.set_rate_limits(ws, RateLimitsSpec(rpm_limit=5))
    assert (invalidation.BUDGETS, ws) in seen
    assert (await services.budgets.limits_for(ws)).rpm_limit == 5
    principal = await services.accounts.authenticate(ADMIN_KEY)
    created = await services.accounts.create_key(ws, "gone")
    await services.accounts.authenticate(created.key)
    await services.accounts.revoke_key(created.id)
    assert (invalidation.API_KEY, created.id) in seen
    # A flush (messages may have been lost) drops everything cached.
    await services.budgets.limits_for(ws)
    await services.state.publish(FLUSH_ALL, FLUSH_ALL)
    assert services.budgets._cache == {} and services.accounts._cache == {}
    await services.state.publish(invalidation.BYOK, FLUSH_ALL)
    await services.state.publish(invalidation.MODEL_GROUPS, ws)
    unsubscribe()
    assert principal.is_admin
