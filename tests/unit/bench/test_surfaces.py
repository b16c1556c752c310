"""``bench/surfaces.py``: the "surfaces" section of ``bench.run`` rendered from saved results,
and the hand-run sections it replaces in a regenerated BENCHMARKS.md (``bench/report.py``)."""

from __future__ import annotations

from dataclasses import asdict

import orjson

from bench.console import PAGES, PAGES_SECTION
from bench.embeddings import SECTION as EMBEDDINGS
from bench.latency import LatencyResult
from bench.mcp_gateway import SECTION as MCP
from bench.mcp_gateway import Result
from bench.report import merge
from bench.responses import SECTION as RESPONSES
from bench.served import plain
from bench.stats import summarize
from bench.surfaces import SUMMARY, render_all

STAMP = {"by": "python -m bench.run", "at": "2026-12-03 10:00", "load": 3.0, "pinned": False, "warden": "w"}


def _page(ms: float, added: float | None) -> dict:
    def s(v: float) -> dict:
        return {"n": 1, "median": v, "p25": v, "p75": v, "p99": v}

    return {"ms": s(ms), "added_ms": s(added) if added is not None else None, "bytes": 1234, "errors": 0}


def _saved() -> dict:
    s = summarize
    latency = [LatencyResult("direct", s([0.5]), None), LatencyResult("responses, store=false", s([2.0]), s([1.5]))]
    mcp = Result(10, s([3.0]), s([12.0]), s([9.0]), 0, 5, 5, 0, 1.0, 2.0)
    res = {"responses": {**STAMP, "rounds": 10, "streams": 0, "latency": plain(latency), "stream": []},
           "embeddings": {"error": "RuntimeError: adding a credential failed"},
           "mcp": {**STAMP, "at": "2026-12-03 10:05", "load": 4.2, "result": asdict(mcp)},
           "console": {**STAMP, "rounds": 10, "pages": {PAGES[0]: _page(0.4, None), "/ui/": _page(2.0, 1.6)}}}
    return orjson.loads(orjson.dumps(res))  # what results.json gives back


def test_summary_puts_each_surface_beside_its_baseline() -> None:
    text = "\n".join(render_all(_saved()))
    assert text.startswith(SUMMARY + "\n")
    assert "| `/v1/responses`, store=false | simulator chat completions | 0.500 | 2.000 | 1.500 | 4.0× |" in text
    assert ("| `/mcp` tools/call `echo` (allowed) | the upstream MCP server directly "
            "| 3.000 | 12.0 | 9.000 | 4.0× |") in text
    assert "| `GET /ui/` | `GET /healthz` | 0.400 | 2.000 | 1.600 | 5.0× |" in text
    # the failed part is named, and its section left out so the previous report's one survives
    assert "- Added latency: /v1/embeddings: not measured in this run (RuntimeError" in text
    assert EMBEDDINGS not in text.replace("- Added latency: /v1/embeddings", "")
    assert RESPONSES in text and PAGES_SECTION in text and "| `/ui/` | 2.000 | 2.000 | 1.600 |" in text
    # the MCP section says when its figures were measured, not when they were rendered
    assert "`python -m bench.run` on 2026-12-03 10:05 UTC" in text and "load average 4.2 at the end" in text
    assert "**5 answered with their own result, 0 lost or errored**" in text
    assert render_all(None) == []


def test_regenerated_report_replaces_hand_run_sections_and_keeps_the_rest() -> None:
    old = ("# Benchmarks\n\nold\n\n## Spend ledger durability\n\nledger prose\n\n"
           f"{EMBEDDINGS}\n\nhand-run embeddings\n\n{MCP}\n\nhand-run mcp\n")
    new = "\n".join(["# Benchmarks\n\nnew\n", *render_all(_saved())])
    merged = merge(new, old)
    assert "ledger prose" in merged and "hand-run embeddings" in merged  # not measured: carried over
    assert "hand-run mcp" not in merged and merged.count(MCP) == 1  # measured: the new one only
    assert merged.index(MCP) < merged.index("## Spend ledger durability")
