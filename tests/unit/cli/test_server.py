"""``warden serve``'s welcome block: what it says in each situation."""

from __future__ import annotations

from pathlib import Path

from warden import __version__
from warden.cli.server import Started, welcome
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
