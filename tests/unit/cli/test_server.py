"""``warden serve``'s welcome block: what it says in each situation."""

from __future__ import annotations

from pathlib import Path

from warden import __version__
from warden.startup import Started, welcome
from warden.config import load_settings


def test_first_start_names_the_key_file_and_the_provider_step(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    text = welcome(settings, Started(tmp_path / "admin.key", True, 0), "http://127.0.0.1:8080")
    assert text.splitlines()[0] == f"Warden {__version__} on http://127.0.0.1:8080"
    assert f"admin key       {tmp_path / 'admin.key'} (new)" in text
    assert f"export WARDEN_KEY=$(cat {tmp_path / 'admin.key'})" in text
    assert "next            warden byok add PROVIDER --key -" in text
    assert "http://127.0.0.1:8080/docs" in text


def test_a_later_start_with_a_provider_suggests_a_chat(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, admin_key="wk-operator-0123456789abcdef")
    text = welcome(settings, Started(None, False, 2), "http://127.0.0.1:8080")
    assert "WARDEN_ADMIN_KEY" in text and "export WARDEN_KEY" not in text and "(new)" not in text
    assert 'next            warden chat -m auto "Hello"' in text


def test_the_entry_parses_serve_as_the_cli_does() -> None:
    """``warden serve`` starts past the CLI (warden/entry.py) with the same options as the
    typer command, and leaves to the CLI whatever it does not parse."""
    import inspect

    from warden.cli.server import serve
    from warden.entry import SERVE_OPTIONS, serve_environment

    assert [f"--{name}" for name in inspect.signature(serve).parameters] == list(SERVE_OPTIONS)
    assert serve_environment([]) == {}
    assert serve_environment(["--port", "9000", "--host=0.0.0.0", "--workers", "2"]) == {
        "WARDEN_PORT": "9000", "WARDEN_HOST": "0.0.0.0", "WARDEN_WORKERS": "2"}
    for theirs in (["--help"], ["--port", "many"], ["--port"], ["--por", "1"], ["extra"], ["--version"]):
        assert serve_environment(theirs) is None, theirs


def test_serve_help_is_still_the_clis(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "warden", "serve", "--help"], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "100"})
    assert r.returncode == 0, r.stderr
    assert "Usage: warden serve [OPTIONS]" in r.stdout and "--workers" in r.stdout
