"""Section "surfaces" of ``python -m bench.run``: ``/v1/responses`` (plain and streamed),
``/v1/embeddings``, an allowed MCP tool call through ``/mcp`` and console pages under
``/ui``, each beside its baseline measured in the same rounds. The measurements live in
their modules (each also runs on its own: ``python -m bench.responses`` etc.); this
runs them on bench.run's simulator and Warden (the MCP one starts its own upstream MCP
server and a Warden allowed to reach it, with bench.run's Warden paused meanwhile) and
renders their sections plus one summary table."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from bench import console, embeddings, mcp_gateway, responses
from bench.report import table
from bench.served import Served, ratio

SUMMARY = "## New surfaces beside their baselines"
# name -> (measure, render, section title)
PARTS: dict[str, tuple[Callable[..., dict], Callable[[dict], str], str]] = {
    "responses": (responses.run, responses.render, responses.SECTION),
    "embeddings": (embeddings.run, embeddings.render, embeddings.SECTION),
    "mcp": (mcp_gateway.run, mcp_gateway.render_section, mcp_gateway.SECTION),
    "console": (console.run, console.render_pages, console.PAGES_SECTION),
}


def run_all(logs: Path, quick: bool, served: Served, *,
            pause: Callable[[], AbstractContextManager[Any]] | None = None,
            say: Callable[[str], None] = print) -> dict[str, dict]:
    """Every part; one that fails is recorded as ``{"error": ...}`` and the rest still run."""
    out: dict[str, dict] = {}
    for name, (measure, _, _) in PARTS.items():
        say(f"  surfaces: {name}")
        try:
            if name == "mcp":  # its own Warden on the same core: bench.run's one paused
                with pause() if pause else nullcontext():
                    out[name] = measure(logs, quick)
            else:
                out[name] = measure(logs, quick, served)
        except Exception as exc:  # noqa: BLE001 - a benchmark part may fail; the run goes on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            say(f"  surfaces: {name} failed: {out[name]['error']}")
    return out


def render_all(res: dict | None) -> list[str]:
    """The summary and each measured part's section; a failed part's section is left out
    (the previous report's one is carried over, ``bench/report.py``) and its error listed."""
    if not res:
        return []
    failed = [f"- {PARTS[n][2][3:]}: not measured in this run ({r['error']})"
              for n, r in res.items() if n in PARTS and "error" in r]
    out = [SUMMARY + "\n", "Each surface and its baseline measured in the same rounds (medians, ms); "
           "method and every row in the sections below.\n", table(
               ["surface", "baseline", "baseline (ms)", "through Warden (ms)", "added (ms)", "of baseline"],
               summary_rows(res))]
    if failed:
        out.append("\n".join(failed) + "\n")
    out += [PARTS[n][1](r) for n, r in res.items() if n in PARTS and "error" not in r]
    return out


def summary_rows(res: dict) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def add(surface: str, baseline: str, base: float | None, through: float | None, added: float | None) -> None:
        rows.append([surface, baseline, base, through, added, ratio(through, base)])

    def med(d: dict | None, key: str) -> float | None:
        v = (d or {}).get(key)
        return v["median"] if v else None

    r = res.get("responses") or {}
    by = {x["name"]: x for x in r.get("latency", [])}
    direct = by.get("direct")
    for name, label in (("chat completions", "`/v1/chat/completions`"),
                        ("responses, store=false", "`/v1/responses`, store=false"),
                        ("responses, store=true", "`/v1/responses`, store=true")):
        if name in by and direct:
            add(label, "simulator chat completions", med(direct, "latency_ms"), med(by[name], "latency_ms"),
                med(by[name], "added_ms"))
    s_by = {x["name"]: x for x in r.get("stream", [])}
    for name, label in (("chat completions, stream", "`/v1/chat/completions` stream, TTFT"),
                        ("responses, stream, store=false", "`/v1/responses` stream, TTFT")):
        if name in s_by and "direct" in s_by:
            add(label, "simulator chat stream, TTFT", med(s_by["direct"], "ttft_ms"), med(s_by[name], "ttft_ms"),
                med(s_by[name], "ttft_added_ms"))
    for name, pair in ((res.get("embeddings") or {}).get("rows") or {}).items():
        if name.startswith("embeddings"):
            p = {x["name"]: x for x in pair}
            if "direct" in p and "warden" in p:
                add(f"`/v1/embeddings`, {name[12:]}", "simulator embeddings (float)", med(p["direct"], "latency_ms"),
                    med(p["warden"], "latency_ms"), med(p["warden"], "added_ms"))
    m = (res.get("mcp") or {}).get("result")
    if m:
        add("`/mcp` tools/call `echo` (allowed)", "the upstream MCP server directly", m["direct"]["median"],
            m["through"]["median"], m["added"]["median"])
    pages = (res.get("console") or {}).get("pages") or {}
    base = pages.get(console.PAGES[0])
    for path, p in pages.items():
        if path != console.PAGES[0] and base and p.get("ms"):
            add(f"`GET {path}`", "`GET /healthz`", med(base, "ms"), med(p, "ms"), med(p, "added_ms"))
    return rows
