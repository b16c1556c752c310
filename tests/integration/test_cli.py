"""The CLI through its real entry points: in-process via Typer's runner, and the
installed ``warden`` script as a subprocess for ``serve``."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from warden import __version__
from warden.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    assert invoke("migrate").exit_code == 0  # commands never create the database themselves
    return {"WARDEN_DATA_DIR": str(tmp_path / "data")}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_keys_create_list_revoke(env) -> None:
    r = invoke("keys", "create", "--name", "ci", "--role", "admin")
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("wk-")
    listed = invoke("keys", "list")
    assert "ci" in listed.stdout and key not in listed.stdout
    key_id = next(line.split()[1] for line in listed.stdout.splitlines() if " ci " in line)
    r = invoke("keys", "revoke", key_id)
    assert r.exit_code == 0 and f"revoked {key_id}" in r.stdout
    assert invoke("keys", "revoke", "key_nope").exit_code == 1


def test_workspaces_and_errors(env) -> None:
    assert "created workspace acme" in invoke("workspaces", "create", "acme").stdout
    assert invoke("workspaces", "create", "acme").exit_code == 1
    assert "acme" in invoke("workspaces", "list").stdout
    r = invoke("keys", "create", "--name", "x", "--workspace", "nowhere")
    assert r.exit_code == 1 and "no workspace named 'nowhere'" in r.stderr
    r = invoke("keys", "create", "--name", "x", "--role", "owner")
    assert r.exit_code == 1 and "role" in r.stderr
    assert "bootstrap" not in invoke("keys", "list", "--workspace", "acme").stdout


def test_migrate_and_bad_config(env, monkeypatch) -> None:
    r = invoke("migrate")
    from warden.store.migrate import head_revision

    assert r.exit_code == 0 and f"revision {head_revision()}" in r.stdout
    monkeypatch.setenv("WARDEN_PORT", "70000")
    r = invoke("migrate")
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: WARDEN_PORT:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_empty_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_") or k.startswith("WARDEN_TEST")}
    env.update(WARDEN_DATA_DIR=str(data), WARDEN_PORT=str(port))
    warden = Path(sys.executable).parent / "warden"
    proc = subprocess.Popen([str(warden), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90  # a loaded CI machine starts slowly
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not answer /healthz"
                time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        key_file = data / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        r = httpx.get(f"http://127.0.0.1:{port}/api/keys")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        admin = key_file.read_text().strip()
        r = httpx.get(f"http://127.0.0.1:{port}/api/keys", headers={"authorization": f"Bearer {admin}"})
        assert [k["name"] for k in r.json()] == ["bootstrap-admin"]
        address = json.loads((data / "server.json").read_text())
        assert address == {"url": f"http://127.0.0.1:{port}", "pid": proc.pid}
        page = httpx.get(f"http://127.0.0.1:{port}/")  # the console's sign-in, which names the key file
        assert page.status_code == 307 and page.headers["location"].endswith("/ui")
        page = httpx.get(f"http://127.0.0.1:{port}/ui/login")
        assert page.status_code == 200 and "admin.key" in page.text
        # The CLI finds the server through the address file and goes through its API.
        listed = subprocess.run([str(warden), "keys", "list", "--json"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert [k["name"] for k in json.loads(listed.stdout)] == ["bootstrap-admin"]
        assert "directly" not in listed.stderr
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    logs = stderr.decode()
    assert str(key_file) in logs and admin not in logs
    # The welcome: address, data directory, the key's path and how to export it, what next.
    assert f"Warden {__version__} on http://127.0.0.1:{port}" in logs
    assert f"export WARDEN_KEY=$(cat {key_file})" in logs
    assert "next            warden byok add PROVIDER --key -" in logs
    assert not (data / "server.json").exists()  # removed at a clean stop


def test_route_explain_and_usage(env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-0123456789abcdef")
    r = invoke("route", "explain", "Prove that the sum of two even numbers is even, step by step",
               "--tools")
    assert r.exit_code == 0, r.output
    assert "model auto (auto)" in r.stdout and "openai/" in r.stdout
    assert "cost guard: fallbacks up to 4x the first choice" in r.stdout
    r = invoke("route", "explain", "hi", "--model", "nope/none")
    assert r.exit_code == 1 and "not served" in r.stderr
    r = invoke("usage", "--group-by", "provider")
    assert r.exit_code == 0 and "requests" in r.stdout
    assert invoke("usage", "--group-by", "week").exit_code == 2


@pytest.mark.parametrize("entry", [["serve", "--workers", "2"], ["-m", "warden.server"]])
def test_several_workers_without_redis_refuse_to_start(tmp_path: Path, entry: list[str]) -> None:
    """Issue 13, item 4, through the real entries (``warden serve`` and the serving
    module it becomes): one line naming WARDEN_REDIS_URL, and nothing listens."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_") or k.startswith("WARDEN_TEST")}
    env.update(WARDEN_DATA_DIR=str(tmp_path / "data"), WARDEN_PORT=str(port), WARDEN_WORKERS="2")
    program = [sys.executable] if entry[0] == "-m" else [str(Path(sys.executable).parent / "warden")]
    proc = subprocess.Popen([*program, *entry], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it started serving: stop it (and its workers) cleanly
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        pytest.fail(f"several workers without Redis started serving:\n{stderr[-2000:]}")
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: WARDEN_WORKERS:"), stderr
    assert "WARDEN_REDIS_URL" in lines[0] and "Traceback" not in stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    assert not (tmp_path / "data" / "warden.db").exists()  # refused before touching anything


def test_serve_stops_with_the_migrations_own_words_when_it_fails(tmp_path: Path) -> None:
    """The serving process migrates a schema behind in a child (``warden migrate``); when
    that fails, serve exits 1 with the child's (redacted) output, not a traceback of its own."""
    import sqlite3

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_") or k.startswith("WARDEN_TEST")}
    env.update(WARDEN_DATA_DIR=str(data), WARDEN_PORT=str(_free_port()))
    warden = Path(sys.executable).parent / "warden"
    assert subprocess.run([str(warden), "init"], env=env, capture_output=True, timeout=120).returncode == 0
    with sqlite3.connect(data / "warden.db") as conn:  # a revision no migration knows
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    r = subprocess.run([str(warden), "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    first, *rest = r.stderr.strip().splitlines()
    assert first == "error: the database migration failed:" and "ffffffffffff" in "\n".join(rest)
    assert not (data / "server.json").exists()
