"""``warden byok …`` and ``warden vault …`` through the real CLI (Typer's runner, and the
installed script as a subprocess for the start-up refusal)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from warden.cli import app
from warden.testing.upstream import UpstreamServer

SECRET = "sk-proj-CLIsecretNeverEchoed0123456789lmno"
runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    assert invoke("migrate").exit_code == 0  # commands never create the database themselves
    return tmp_path / "data"


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def cred_ids(output: str) -> list[str]:
    return re.findall(r"\bcred_[0-9a-f]{20}\b", output)


def test_add_from_stdin_list_test_remove(data_dir: Path) -> None:
    with UpstreamServer("openai", api_key=SECRET) as up:
        r = invoke("byok", "add", "openai-compatible", "--key", "-", "--label", "lab",
                   "--base-url", up.base_url, "--model", "m1", "--model", "m2", input=SECRET + "\n")
        assert r.exit_code == 0, r.output
        assert "sk-…lmno" in r.stdout and SECRET not in r.output
        (cred,) = cred_ids(r.stdout)

        listed = invoke("byok", "list")
        assert cred in listed.stdout and "active" in listed.stdout
        assert SECRET not in listed.output and "sk-…lmno" in listed.stdout

        tested = invoke("byok", "test", cred)
        assert tested.exit_code == 0 and tested.stdout.startswith("ok (")
        assert "2 models listed" in tested.stdout

    unreachable = invoke("byok", "test", cred)  # the server is gone
    assert unreachable.exit_code == 1 and unreachable.stdout.startswith("unreachable")
    removed = invoke("byok", "remove", cred)
    assert removed.exit_code == 0 and f"removed {cred}" in removed.stdout
    assert cred_ids(invoke("byok", "list").stdout) == []
    db = b"".join(p.read_bytes() for p in data_dir.glob("warden.db*"))
    assert b"byok.delete" in db and SECRET.encode() not in db


def test_add_errors_are_one_line(data_dir: Path) -> None:
    r = invoke("byok", "add", "openai")
    assert r.exit_code == 1 and "api_key: provider 'openai' needs an API key" in r.stderr
    r = invoke("byok", "add", "nope", "--key", SECRET)
    assert r.exit_code == 1 and "provider: " in r.stderr and SECRET not in r.output
    r = invoke("byok", "add", "openai", "--key", "-", input="\n")
    assert r.exit_code == 1 and "no key on standard input" in r.stderr
    r = invoke("byok", "add", "ollama", "--workspace", "nowhere")
    assert r.exit_code == 1 and "no workspace named 'nowhere'" in r.stderr
    ok = invoke("byok", "add", "ollama")  # a local provider needs no key
    assert ok.exit_code == 0 and "no key" in ok.stdout
    r = invoke("byok", "remove", "cred_00000000000000000000")
    assert r.exit_code == 1 and "no credential" in r.stderr


def test_generate_key_and_rotate(data_dir: Path) -> None:
    r = invoke("byok", "add", "groq", "--key", SECRET)
    assert r.exit_code == 0, r.output
    new = invoke("vault", "generate-key").stdout.strip()
    assert len(base64.b64decode(new, validate=True)) == 32
    assert invoke("vault", "generate-key").stdout.strip() != new

    r = invoke("vault", "rotate", "--new-key", "-", input=new + "\n")
    assert r.exit_code == 0, r.output
    assert "re-encrypted 1 credentials" in r.stdout and "master.key now holds" in r.stdout
    assert new not in r.output
    assert (data_dir / "master.key").read_text() == new + "\n"
    assert "sk-…" in invoke("byok", "list").stdout  # still readable under the new key

    r = invoke("vault", "rotate", "--new-key", "not-a-key")
    assert r.exit_code == 2 and "--new-key: must be the base64 of exactly 32 bytes" in r.stderr


def test_rotate_with_env_key_prints_the_procedure(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = base64.b64encode(os.urandom(32)).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("WARDEN_MASTER_KEY", old)
    assert invoke("byok", "add", "groq", "--key", SECRET).exit_code == 0
    r = invoke("vault", "rotate", "--new-key", new)
    assert r.exit_code == 0 and "re-encrypted 1 credentials" in r.stdout
    assert "WARDEN_MASTER_KEY is set: update it" in r.stderr
    monkeypatch.setenv("WARDEN_MASTER_KEY", f"{new},{old}")
    assert "sk-…" in invoke("byok", "list").stdout


def test_wrong_master_key_exits_non_zero_with_the_message(data_dir: Path) -> None:
    assert invoke("byok", "add", "groq", "--key", SECRET).exit_code == 0
    env = {**os.environ, "WARDEN_DATA_DIR": str(data_dir),
           "WARDEN_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    proc = subprocess.run([sys.executable, "-m", "warden", "byok", "list"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "encrypted credentials were sealed under master key id" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
