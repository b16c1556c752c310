"""``cli/common.py``: tables that fit the terminal without cutting ids, and ``--json``."""

from __future__ import annotations

import json

import pytest

from warden.cli import common
from warden.cli.common import Col, show

ROWS = [{"id": "apr_0123456789abcdef0123", "status": "pending", "tool": "current_time",
         "run": "run_fedcba9876543210fedc", "when": "2026-12-02T04:23:47.570820+00:00",
         "tags": ["a", "b"], "none": None}]
COLS = [Col("id", "id", id=True), Col("status", "status"), Col("tool", "tool"), Col("run", "run", id=True),
        Col("requested", "when"), Col("tags", "tags"), Col("none", "none")]


@pytest.fixture
def width(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    def set_width(columns: int) -> None:
        monkeypatch.setattr(common.out, "_width", columns)
        monkeypatch.setattr(common.err, "_width", columns)
        capsys.readouterr()
    return set_width


def test_ids_stay_whole_and_columns_that_do_not_fit_are_named(width, capsys) -> None:  # noqa: ANN001
    width(60)
    show(ROWS, COLS)
    out, err = capsys.readouterr()
    assert ROWS[0]["id"] in out and ROWS[0]["run"] in out
    assert "not shown at this width:" in err and "none" in err
    assert max(len(line) for line in out.splitlines()) <= 60
    width(200)
    show(ROWS, COLS)
    out, err = capsys.readouterr()
    assert "2026-12-02 04:23" in out and "a, b" in out and err == ""


def test_only_ids_left_is_as_narrow_as_it_gets(width, capsys) -> None:  # noqa: ANN001
    width(20)
    show(ROWS, [Col("id", "id", id=True), Col("run", "run", id=True), Col("tool", "tool")])
    out, _ = capsys.readouterr()
    assert ROWS[0]["id"] in out and ROWS[0]["run"] in out and "current_time" not in out


def test_json_has_every_field(capsys) -> None:  # noqa: ANN001
    show(ROWS, COLS, as_json=True)
    assert json.loads(capsys.readouterr().out) == ROWS


def test_where_the_database_is(tmp_path) -> None:  # noqa: ANN001
    from warden.cli.common import database_or_exit, sqlite_path
    from warden.config import load_settings

    pg = load_settings(data_dir=tmp_path, database_url="postgresql+asyncpg://warden@db.internal/warden")
    assert sqlite_path(pg) is None and database_or_exit(pg) == "db.internal/warden"
    lite = load_settings(data_dir=tmp_path)
    assert sqlite_path(lite) == tmp_path / "warden.db"
    (tmp_path / "warden.db").touch()
    assert database_or_exit(lite) == str(tmp_path / "warden.db")
