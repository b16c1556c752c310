"""What the serving process loads at start: the app is built without the MCP SDK,
the CLI, alembic, the console's pages (Jinja2) or a database dialect it does not use
(each is MBs resident or a share of the cold start; they load when first used)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("mcp", "mcp_types", "httpx", "rich", "pygments", "typer", "alembic",
         "sqlalchemy.dialects.postgresql", "jinja2", "warden.console.web")

_PROBE = """
import json, sys
from warden.config import load_settings
from warden.server import create_app
app = create_app(load_settings(data_dir=sys.argv[1]))
assert any(getattr(r, "path", None) == "/mcp" for r in app.routes)
print(json.dumps(sorted(m for m in sys.modules if m in set(sys.argv[2:]))))
"""


def test_building_the_served_app_leaves_the_heavy_modules_unloaded(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), *HEAVY],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_probe_sees_a_module_that_is_loaded(tmp_path: Path) -> None:
    # The same probe reports what is imported: the check above can fail.
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), "fastapi", "mcp"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["fastapi"]


_CLI_PROBE = """
import json, sys
from warden.config import load_settings
from warden.cli.client import find_server
assert find_server(load_settings(data_dir=sys.argv[1])) is None  # none runs there
print(json.dumps(sorted(m for m in ("uvicorn", "fastapi", "warden.app", "warden.server", "sqlalchemy")
                        if m in sys.modules)))
"""


def test_a_cli_command_looking_for_its_server_does_not_load_the_server(tmp_path: Path) -> None:
    """Every client command finds the server first: that must not import the serving stack
    (it did, for the address file's name: ~1 CPU-s a command)."""
    out = subprocess.run([sys.executable, "-c", _CLI_PROBE, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


_PREPARE_PROBE = """
import asyncio, json, sys
from warden.config import load_settings
from warden.startup import prepare
from warden.store import migrate
from warden.store.db import Database
settings = load_settings(data_dir=sys.argv[1])
started = asyncio.run(prepare(settings, serving=sys.argv[2] == "serving"))

async def at_head():
    db = Database(settings.db_url)
    try:
        return await migrate.at_head(db)
    finally:
        await db.close()

print(json.dumps({"alembic": "alembic" in sys.modules, "at_head": asyncio.run(at_head()),
                  "new_key": started.new_key}))
"""


def test_the_serving_process_migrates_a_new_database_without_loading_alembic(tmp_path: Path) -> None:
    """A first start (or one after an upgrade) migrates in a child: alembic would stay
    resident in the server (~12 MB) for its life. ``warden init`` migrates in process."""
    for mode, loaded in (("serving", False), ("init", True)):
        out = subprocess.run([sys.executable, "-c", _PREPARE_PROBE, str(tmp_path / mode), mode],
                             capture_output=True, text=True, timeout=180, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {
            "alembic": loaded, "at_head": True, "new_key": True}, mode
