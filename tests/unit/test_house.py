"""The house rules of the README that imports alone do not show (the layers and
cycles are checked by ``lint-imports``, which ``make test`` runs first):
modules stay small unless they say why, and no docstring or comment points to a
file that is not there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "warden"
MAX_LINES = 450
# A long module says why at its top, in a docstring line starting with this.
LONG_REASON = "Long on purpose:"
# A path-like mention: ``gateway/types.py``, ``api/openai_compat.py``, ``README.md``.
_MENTION = re.compile(r"\b(?:[A-Za-z_][\w-]*/)*[A-Za-z_][\w-]*\.(?:py|md)\b")

MODULES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(SRC))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_small_or_says_why(path: Path) -> None:
    lines = path.read_text().count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert any(line.startswith(LONG_REASON) for line in doc.splitlines()), (
        f"{_rel(path)} has {lines} lines (> {MAX_LINES}): split it along its seams, or say "
        f"why it is one piece in a docstring line starting {LONG_REASON!r}")


def _exists(mention: str, near: Path) -> bool:
    if mention in {"README.md", "BENCHMARKS.md"}:
        return (SRC.parents[1] / mention).exists()
    if "/" in mention:  # relative to the repo, or to a folder the mentioning file is in
        return any((base / mention).exists() for base in (SRC.parents[1], *near.parents))
    return any(SRC.rglob(mention))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_mentioned_files_exist(path: Path) -> None:
    missing = [m for m in set(_MENTION.findall(path.read_text())) if not _exists(m, path)]
    assert not missing, f"{_rel(path)} mentions files that are not in the repo: {sorted(missing)}"


def test_the_checks_catch_what_they_guard(tmp_path: Path) -> None:
    assert _MENTION.findall("see ``agents/mcp.py`` and DESIGN.md") == ["agents/mcp.py", "DESIGN.md"]
    assert not _exists("agents/mcp.py", SRC / "agents" / "registry.py")
    assert _exists("agents/tools/mcp.py", SRC / "agents" / "registry.py")
    assert _exists("README.md", SRC / "app.py")
