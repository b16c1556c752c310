"""Scores of a mutmut run, per mutated file (``make mutation`` prints them).

Reads the ``mutants/**/*.py.meta`` files mutmut 3 leaves. Score = killed (or
timed out) / all mutants of the file, so a mutant no test reaches counts as a
survivor, never as skipped. Then every survivor by name, for the closing note.
Exit 1 when a file scores under ``--min`` (default 80).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # failed, pytest error, timeout, type check
NO_TESTS = {5, 33}


def scores(root: Path) -> list[tuple[str, int, int, list[tuple[str, str]]]]:
    out = []
    for meta in sorted(root.rglob("*.py.meta")):
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        killed = sum(1 for c in codes.values() if c in KILLED)
        survivors = [(name, "no tests" if c in NO_TESTS else "survived" if c == 0 else f"exit {c}")
                     for name, c in sorted(codes.items()) if c not in KILLED]
        out.append((str(meta.relative_to(root)).removesuffix(".meta"), killed, len(codes), survivors))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--min", type=float, default=80.0)
    args = parser.parse_args(argv)
    rows = scores(args.root)
    failing = False
    for path, killed, total, survivors in rows:
        score = 100 * killed / total
        failing |= score < args.min
        print(f"{path}: {score:.1f}% ({killed}/{total} killed)")
        for name, why in survivors:
            print(f"    {why}: {name}")
    return 1 if failing or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
