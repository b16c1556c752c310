"""The audit chain against someone who can write the database (issue 13, item 8):
deleting the tail and moving ``audit_head`` back, or rewriting an event and
recomputing every later hash, used to pass ``warden audit verify``. Signed
checkpoints outside the database now catch both, on SQLite and PostgreSQL, through
the services, the CLI and a third party's check of an export."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, PG_URL, requires_pg, reset_pg
from warden.cli import app
from warden.config import Settings, load_settings
from warden.services import Services
from warden.store.audit import chain_hash
from warden.store.models import AuditEvent, AuditHead

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def settings_any_db(request: pytest.FixtureRequest, data_dir: Path) -> Settings:
    url = None
    if request.param == "postgresql":
        await reset_pg(PG_URL)
        url = PG_URL
    return load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, database_url=url, access_log=False)


async def _write_events(settings: Settings, n: int, prefix: str = "team") -> None:
    """``n`` audited changes through the real services; closing signs the head."""
    svc = await Services.start(settings)
    try:
        for i in range(n):
            await svc.accounts.create_workspace(f"{prefix}-{i}", actor="test")
    finally:
        await svc.close()


async def _verify(settings: Settings):
    svc = await Services.start(settings, bootstrap=False)
    try:
        return await svc.audit_log.verify()
    finally:
        await svc.close()


async def _delete_tail(settings: Settings, keep: int) -> None:
    """The attacker's first move: drop events after ``keep`` and move the head back."""
    from warden.store.db import Database

    db = Database(settings.db_url)
    try:
        async with db.transaction() as s:
            kept = (await s.execute(select(AuditEvent.hash).where(AuditEvent.seq == keep))).scalar_one()
            await s.execute(delete(AuditEvent).where(AuditEvent.seq > keep))
            await s.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=keep, hash=kept))
    finally:
        await db.close()


async def _rewrite(settings: Settings, seq: int, actor: str) -> None:
    """The attacker's second move: change one event and recompute every later hash and the head."""
    from warden.store.db import Database

    db = Database(settings.db_url)
    try:
        async with db.transaction() as s:
            rows = list((await s.execute(select(AuditEvent).where(AuditEvent.seq >= seq)
                                         .order_by(AuditEvent.seq))).scalars())
            prev = rows[0].prev_hash
            for ev in rows:
                ev.actor = actor if ev.seq == seq else ev.actor
                ev.prev_hash = prev
                ev.hash = prev = chain_hash(prev, ev.seq, ev.ts, ev.workspace_id, ev.actor, ev.action,
                                            ev.target, ev.data)
            await s.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=rows[-1].seq, hash=prev))
    finally:
        await db.close()


async def test_a_deleted_tail_with_the_head_moved_back_fails_verification(settings_any_db: Settings) -> None:
    await _write_events(settings_any_db, 6)
    before = await _verify(settings_any_db)
    assert before.ok and before.count == 8  # the bootstrap's default workspace and key, six more
    total = before.count
    await _delete_tail(settings_any_db, keep=3)
    result = await _verify(settings_any_db)
    assert not result.ok, "a truncated chain with audit_head moved back still verified"
    assert result.broken_seq == 4 and result.count == 3
    assert f"events 4..{total} are missing" in result.reason and "tail was deleted" in result.reason


async def test_a_rewritten_event_with_recomputed_hashes_fails_verification(settings_any_db: Settings) -> None:
    await _write_events(settings_any_db, 6)
    total = (await _verify(settings_any_db)).count
    await _rewrite(settings_any_db, 2, actor="someone-else")
    result = await _verify(settings_any_db)
    assert not result.ok, "a rewritten chain with recomputed hashes still verified"
    # One checkpoint (at the close after the writes): nothing before it is known sound.
    assert result.broken_seq == total and result.count == 0
    assert (f"event {total} does not match the checkpoint" in result.reason
            and f"rewritten within events 1..{total} and its hashes recomputed" in result.reason)


async def test_the_signer_refuses_a_tampered_head_and_says_so(settings_any_db: Settings,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    await _write_events(settings_any_db, 3)
    path = settings_any_db.audit_checkpoint_path
    lines_before = path.read_text().splitlines()
    await _delete_tail(settings_any_db, keep=2)
    with caplog.at_level(logging.ERROR, logger="warden.audit"):
        await _write_events(settings_any_db, 2, "later")  # new events on top of the truncated chain
    assert path.read_text().splitlines() == lines_before, "a tampered head got a fresh signature"
    assert any("contradicts the checkpoint" in r.getMessage() for r in caplog.records)
    # The honest checkpoint still names what happened.
    assert "tail was deleted" in (await _verify(settings_any_db)).reason


async def test_checkpoints_are_signed_after_n_events_and_logged_unredacted(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from warden.logs import configure_logging
    import io

    settings = load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                             audit_checkpoint_events=3, audit_checkpoint_interval=0.05)
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        svc = await Services.start(settings)
        try:
            for i in range(4):
                await svc.accounts.create_workspace(f"w{i}", actor="test")
            for _ in range(100):  # the poll is capped by the interval
                if svc.audit_log.signer.latest and svc.audit_log.signer.latest.seq == 6:
                    break
                await asyncio.sleep(0.02)
            file_lines = settings.audit_checkpoint_path.read_text().splitlines()
        finally:
            await svc.close()
    finally:
        logging.getLogger().handlers.clear()
    assert json.loads(file_lines[-1])["seq"] == 6  # the bootstrap's two events, four workspaces
    assert stat.S_IMODE(os.stat(settings.audit_checkpoint_path).st_mode) == 0o600
    logged = [json.loads(line)["message"] for line in stream.getvalue().splitlines()
              if '"warden.audit.checkpoint"' in line]
    # The log holds the same line as the file: a copy wherever the logs are shipped.
    assert logged and logged[-1] == f"audit checkpoint {file_lines[-1]}"
    assert "[REDACTED]" not in logged[-1]


# --- the CLI, and a third party ----------------------------------------------------


@pytest.fixture
def cli_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(data_dir))
    assert invoke("migrate").exit_code == 0  # commands never create the database themselves
    return data_dir


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def _cli_settings() -> Settings:
    return load_settings()


def test_cli_verify_fails_on_a_rewritten_chain(cli_env: Path) -> None:
    for name in ("a", "b", "c", "d"):
        assert invoke("workspaces", "create", name).exit_code == 0
    ok = invoke("audit", "verify")
    assert ok.exit_code == 0, ok.output
    asyncio.run(_rewrite(_cli_settings(), 4, actor="mallory"))
    r = invoke("audit", "verify")
    assert r.exit_code == 1, r.output
    # One checkpoint per command that wrote (events 3..6): the rewrite is pinned to event 4.
    assert ("audit chain broken at event 4: event 4 does not match the checkpoint" in one_line(r.stderr)
            and "rewritten at event 4 and its hashes recomputed (3 event(s) before it verified)"
            in one_line(r.stderr))
    assert "Traceback" not in r.output
    assert "4 signed checkpoint(s) match, the latest covers event 6" in one_line(ok.stdout)


def test_cli_export_verified_with_the_public_key_alone(cli_env: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        assert invoke("workspaces", "create", name).exit_code == 0
    public = invoke("audit", "public-key").stdout.strip()
    exported = invoke("audit", "export", "--checkpoints")
    assert exported.exit_code == 0, exported.output
    export = tmp_path / "audit.jsonl"
    export.write_text(exported.stdout)
    header, *rest = [json.loads(line) for line in exported.stdout.splitlines()]
    assert header == {"format": "warden-audit-export/1", "public_key": public}
    assert rest[0].keys() == {"checkpoint"} and rest[-1]["seq"] == 5
    # The third party has the export and the key: no database, no data dir.
    key_file = tmp_path / "signer.pub"
    key_file.write_text(public + "\n")
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("WARDEN_DATA_DIR", str(other))
    r = invoke("audit", "verify", "--export", str(export), "--public-key", str(key_file))
    assert r.exit_code == 0, r.output
    assert "export audit.jsonl ok: 5 events; 3 signed checkpoint(s) match, the latest covers event 5" in r.stdout
    assert not other.exists()
    # The export truncated: fails. Another key: fails. No key: usage error.
    export.write_text("".join(exported.stdout.splitlines(keepends=True)[:-2]))
    r = invoke("audit", "verify", "--export", str(export), "--public-key", public)
    assert r.exit_code == 1 and "broken at event 4: events 4..5 are missing" in one_line(r.stderr)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from warden.store.checkpoints import public_key_text

    r = invoke("audit", "verify", "--export", str(export), "--public-key",
               public_key_text(Ed25519PrivateKey.generate()))
    assert r.exit_code == 1 and "another public key" in one_line(r.stderr)
    r = invoke("audit", "verify", "--export", str(export))
    assert r.exit_code == 2 and "--public-key" in one_line(r.stderr)
    r = invoke("audit", "verify", "--export", str(export), "--public-key", "not-a-key")
    assert r.exit_code == 2 and "base64 of exactly 32 bytes" in one_line(r.stderr)


def test_cli_export_options_are_checked(cli_env: Path) -> None:
    r = invoke("audit", "export", "--checkpoints", "--workspace", "default")
    assert r.exit_code == 2 and "drop --workspace" in one_line(r.stderr)
    r = invoke("audit", "verify", "--public-key", "x")
    assert r.exit_code == 2 and "goes with --export" in one_line(r.stderr)


def test_a_forged_or_damaged_checkpoint_file_fails_verification(cli_env: Path) -> None:
    assert invoke("workspaces", "create", "a").exit_code == 0
    path = _cli_settings().audit_checkpoint_path
    line = json.loads(path.read_text().splitlines()[-1])
    # Someone who can write the file but holds no key moves the anchor back.
    forged = {**line, "seq": 1, "hash": "0" * 64}
    with path.open("a") as f:
        f.write(json.dumps(forged) + "\n")
    r = invoke("audit", "verify")
    assert r.exit_code == 1 and "does not verify with this key" in one_line(r.stderr)
    with path.open("a") as f:
        f.write("garbage\n")
    r = invoke("audit", "verify")
    assert r.exit_code == 1 and "is not a checkpoint: the file was altered" in one_line(r.stderr)


def test_the_signing_key_can_come_from_the_environment(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    seed = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("WARDEN_AUDIT_SIGNING_KEY", seed)
    assert invoke("workspaces", "create", "a").exit_code == 0
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from warden.store.checkpoints import public_key_text

    expected = public_key_text(Ed25519PrivateKey.from_private_bytes(b"k" * 32))
    assert invoke("audit", "public-key").stdout.strip() == expected
    assert not (cli_env / "audit-signing.key").exists()
    assert "1 signed checkpoint(s) match" in invoke("audit", "verify").stdout
    monkeypatch.setenv("WARDEN_AUDIT_SIGNING_KEY", "short")
    r = invoke("audit", "verify")
    assert r.exit_code == 2 and "WARDEN_AUDIT_SIGNING_KEY: Value error, must be base64" in one_line(r.stderr)
