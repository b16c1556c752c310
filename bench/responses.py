"""Added latency of ``POST /v1/responses`` beside ``POST /v1/chat/completions``.

    .venv/bin/python -m bench.responses [--rounds 300] [--write]

The same layout as ``python -m bench.run`` (``bench/run.py``) and
``bench/embeddings.py``: the simulator (``bench/upstream_proc.py``) on core 1 with
this client, ``warden serve`` on core 0, one OpenAI credential serving
``gpt-4o-mini``. Four targets in one set of rounds, one request each per round, the
order rotated each round (:func:`bench.latency.added_latency`): the simulator's
chat completions directly, and through Warden as chat completions, as a Responses
request with ``store: false`` and as one with ``store: true`` (OpenAI's default:
one database row written before the reply). The added latency is *Warden - direct*
within a round. ``--write`` replaces the section "Added latency: /v1/responses" of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.clients import Target
from bench.latency import LatencyResult, added_latency
from bench.procs import CAN_PIN, ROOT
from bench.report import replace_section
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY, add_credential, start_upstream, start_warden

SECTION = "## Added latency: /v1/responses"
PROMPT = "Say hello to the benchmark"


@dataclass
class ResponsesTarget(Target):
    """A target of ``POST /v1/responses``: the same prompt as a Responses input."""

    store: bool = False

    def body(self, *, stream: bool = False, text: str = PROMPT) -> bytes:
        return orjson.dumps({"model": self.model, "input": text, "store": self.store})


def measure(rounds: int) -> list[LatencyResult]:
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-responses-"))
    upstream, up_port = start_upstream(logs, cpus="1")
    warden, port = start_warden(logs, logs / "data", cpus="0", access_log="false")
    try:
        add_credential(port, up_port, models=[MODEL])
        model = f"openai/{MODEL}"
        return added_latency(
            Target("direct", up_port, MODEL, key=UPSTREAM_KEY),
            [Target("chat completions", port, model, key=ADMIN_KEY),
             ResponsesTarget("responses, store=false", port, model, key=ADMIN_KEY, path="/v1/responses"),
             ResponsesTarget("responses, store=true", port, model, key=ADMIN_KEY, path="/v1/responses",
                             store=True)],
            rounds=rounds, warmup=30, time_limit=180)
    finally:
        warden.stop()
        upstream.stop()


def render(results: list[LatencyResult], rounds: int) -> str:
    by = {r.name: r for r in results}
    direct = by["direct"]
    chat = by.get("chat completions")
    rows = []
    for r in results:
        if r.name == "direct":
            continue
        if r.added_ms is None:
            rows.append(f"| {r.name} | – | – | – | – | – | {r.errors} |")
            continue
        over = r.server_overhead_ms
        vs_chat = (f"{r.added_ms.median - chat.added_ms.median:+.3f}"
                   if chat is not None and chat.added_ms is not None else "–")
        rows.append(
            f"| {r.name} | {r.latency_ms.median:.3f} | {r.added_ms.median:.3f} | {r.added_ms.iqr:.3f} | "
            f"{vs_chat} | {over.median if over else float('nan'):.3f} | {r.errors} |")
    pinned = "pinned (Warden core 0; simulator and client core 1)" if CAN_PIN else "not pinned"
    return "\n".join([
        SECTION, "",
        f"`python -m bench.responses` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {pinned}; "
        f"{rounds} rounds after 30 warm-up rounds, the four targets interleaved. Method as in "
        "section 1 (added latency = through Warden − the simulator's `/v1/chat/completions` "
        "directly, in the same round, one keep-alive connection each). A Responses request "
        "is converted to the same internal request and sent upstream as chat completions; "
        "`store=true` (the default) also writes the response to the embedded SQLite before "
        f"the reply. Direct median {direct.latency_ms.median:.3f} ms; load average "
        f"{os.getloadavg()[0]:.1f} at the end (on a shared machine the absolute figures grow "
        "with it; the rows of one run compare).", "",
        "| endpoint | through Warden median (ms) | added median (ms) | added IQR (ms) "
        "| added vs chat completions (ms) | x-warden-overhead-ms median | errors |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = render(measure(args.rounds), args.rounds)
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")
