"""BENCHMARKS.md: machine, method, one table per measurement; sections written
by others (e.g. "Usage queries at 1M rows") are carried over untouched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Sections measured outside bench.run (by hand, each by its own script) that a regenerated
# report carries over, unless the new report has its own section of that title (the
# surfaces bench.run now measures: bench/surfaces.py).
KEEP = ("Usage queries at 1M rows", "Spend ledger durability", "From a fresh copy to the first answer",
        "Mutation testing of the decision cores", "Console and /v1 latency", "Traces and /v1 latency",
        "Added latency: /v1/responses", "Added latency: /v1/embeddings",
        "MCP gateway: added latency and held calls", "Console page load")


def kept_sections(old: str, titles: tuple[str, ...] = KEEP) -> list[str]:
    """The text of each ``## <title>`` section (to the next ``## ``), if present."""
    out = []
    for title in titles:
        m = re.search(rf"^## {re.escape(title)}\s*$.*?(?=^## |\Z)", old, re.MULTILINE | re.DOTALL)
        if m:
            out.append(m.group(0).rstrip() + "\n")
    return out


def merge(new: str, old: str | None) -> str:
    if not old:
        return new
    missing = tuple(t for t in KEEP if not re.search(rf"^## {re.escape(t)}\s*$", new, re.MULTILINE))
    keep = kept_sections(old, missing)
    return new.rstrip() + "\n\n" + "\n".join(keep) if keep else new


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def replace_section(section: str, path: Path) -> None:
    """Put one ``## <title>`` section (its first line) into BENCHMARKS.md in place of the
    old one, or at the end: for benchmarks run on their own, outside ``bench.run``."""
    current = path.read_text() if path.exists() else "# Benchmarks\n\n"
    title = section.split("\n", 1)[0]
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        path.write_text(pattern.sub(lambda _: section, current))
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + section)


def write(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else None
    path.write_text(merge(text, old))
