"""``cli/client.py``: which key the CLI sends, and an error reply as one line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from warden.cli.client import Client, Refused, Server, check, find_key
from warden.config import load_settings


def test_the_key_comes_from_the_environment_then_the_settings_then_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(Refused, match=f"no API key: export WARDEN_KEY=.*{tmp_path / 'admin.key'}"):
        find_key(settings)
    (tmp_path / "admin.key").write_text("wk-from-the-file-0123456789abcdef\n")
    assert find_key(settings) == "wk-from-the-file-0123456789abcdef"
    with_admin = load_settings(data_dir=tmp_path, admin_key="wk-from-the-settings-0123456789ab")
    assert find_key(with_admin) == "wk-from-the-settings-0123456789ab"
    monkeypatch.setenv("WARDEN_KEY", "wk-from-the-env-0123456789abcdef")
    assert find_key(with_admin) == "wk-from-the-env-0123456789abcdef"


def test_error_replies_become_one_line_with_the_next_step() -> None:
    check(httpx.Response(200, json={}))
    envelope = {"error": {"type": "auth", "code": "forbidden", "message": "admins only"}}
    with pytest.raises(Refused, match=r"^admins only \(403 forbidden\); this needs an admin key"):
        check(httpx.Response(403, json=envelope))
    with pytest.raises(Refused, match=r"^bad gateway \(502 \)$"):
        check(httpx.Response(502, text="bad gateway"))
    with pytest.raises(Refused, match=r"^Bad Gateway \(502 \)$"):
        check(httpx.Response(502))


def test_an_unreachable_server_is_one_line() -> None:
    client = Client(Server("http://127.0.0.1:9", "test"), "wk-x")
    try:
        with pytest.raises(Refused, match=r"^http://127.0.0.1:9: ConnectError"):
            client.get("/api/keys")
        with pytest.raises(Refused, match=r"^http://127.0.0.1:9: ConnectError"):
            list(client.stream("GET", "/api/runs/x/events"))
    finally:
        client.close()
