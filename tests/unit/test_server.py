"""``warden/server.py``: the address a client uses, and the address file's life."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from warden.config import load_settings
from warden.server import remove_address, server_url, write_address


def test_server_url_reaches_a_wildcard_bind_on_loopback(tmp_path: Path) -> None:
    def url(host: str) -> str:
        return server_url(load_settings(data_dir=tmp_path, host=host, port=9000))

    assert url("0.0.0.0") == "http://127.0.0.1:9000"
    assert url("::") == "http://[::1]:9000"
    assert url("::1") == "http://[::1]:9000"
    assert url("10.1.2.3") == "http://10.1.2.3:9000"


def test_the_address_file_is_private_and_only_its_writer_removes_it(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", port=9001)
    path = write_address(settings)
    assert path == tmp_path / "data" / "server.json" == settings.address_file
    assert json.loads(path.read_text()) == {"url": "http://127.0.0.1:9001", "pid": os.getpid()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text(json.dumps({"url": "http://127.0.0.1:9002", "pid": os.getpid() + 1}))
    remove_address(path)  # a newer server's: kept
    assert path.exists()
    write_address(settings)
    remove_address(path)
    assert not path.exists()
    remove_address(path)  # already gone: nothing to do
