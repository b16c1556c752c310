"""Golden files for streamed event sequences: events with their ids and times
made stable, compared with (or, with ``WARDEN_UPDATE_GOLDEN=1``, written to) a
JSON file beside the test."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_ID = re.compile(r"^(resp|msg|fc|rs|call)_[0-9a-f]{32}$")
_TIMES = frozenset({"created_at", "completed_at"})


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """``(event name, parsed data)`` of every SSE frame."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = next((line[7:] for line in block.splitlines() if line.startswith("event: ")), None)
        data = next(line[6:] for line in block.splitlines() if line.startswith("data: "))
        out.append((name, json.loads(data)))
    return out


def stable(value: Any, ids: dict[str, str] | None = None) -> Any:
    """``value`` with minted ids numbered by first appearance and times zeroed."""
    ids = {} if ids is None else ids
    if isinstance(value, dict):
        return {k: 0 if k in _TIMES and value[k] is not None else stable(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v, ids) for v in value]
    if isinstance(value, str) and _ID.match(value):
        return ids.setdefault(value, f"{value.split('_')[0]}_{len(ids)}")
    return value


def check_golden(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if os.environ.get("WARDEN_UPDATE_GOLDEN") == "1" or not path.exists():
        assert os.environ.get("CI") is None, f"golden file {path.name} is missing"
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text), f"differs from {path.name}"
