"""Added latency of ``POST /v1/embeddings`` beside ``POST /v1/chat/completions``.

    .venv/bin/python -m bench.embeddings [--rounds 300] [--write]

The same layout as ``python -m bench.run`` (``bench/run.py``): the simulator
(``bench/upstream_proc.py``) on core 1 with this client, ``warden serve`` on core 0,
one OpenAI credential serving ``gpt-4o-mini`` and ``text-embedding-3-small``. Four
targets, one request each per round, the order rotated each round
(:func:`bench.latency.added_latency`): the simulator directly and through Warden, for
chat and for embeddings. The added latency is *Warden - direct* within a round, per
endpoint. Embeddings are measured for one short text (float), 16 texts at 1536
dimensions as floats, and the same as base64 (the OpenAI SDK's default; Warden
encodes it from the upstream's floats). ``--write`` replaces the section
"Added latency: /v1/embeddings" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.clients import Target
from bench.latency import LatencyResult, added_latency
from bench.procs import CAN_PIN, ROOT
from bench.report import replace_section
from bench.targets import (
    ADMIN_KEY,
    MODEL,
    UPSTREAM_KEY,
    add_credential,
    start_upstream,
    start_warden,
)

SECTION = "## Added latency: /v1/embeddings"
EMBEDDING_MODEL = "text-embedding-3-small"
TEXTS = [f"passage {i}: the quick brown fox jumps over the lazy dog" for i in range(16)]


@dataclass
class EmbeddingTarget(Target):
    """A target of ``POST /v1/embeddings`` with a fixed body."""

    payload: dict = field(default_factory=dict)

    def body(self, *, stream: bool = False, text: str = "") -> bytes:
        return orjson.dumps({"model": self.model, **self.payload})


CASES: dict[str, dict] = {
    "1 text, float": {"input": "Say hello to the benchmark", "encoding_format": "float"},
    "16 texts, float": {"input": TEXTS, "encoding_format": "float"},
    "16 texts, base64": {"input": TEXTS, "encoding_format": "base64"},
}


def measure(rounds: int) -> dict[str, list[LatencyResult]]:
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-embeddings-"))
    upstream, up_port = start_upstream(logs, cpus="1")
    warden, port = start_warden(logs, logs / "data", cpus="0", access_log="false")
    try:
        add_credential(port, up_port, models=[MODEL, EMBEDDING_MODEL])
        out: dict[str, list[LatencyResult]] = {}
        chat = added_latency(Target("direct", up_port, MODEL, key=UPSTREAM_KEY),
                             [Target("warden", port, f"openai/{MODEL}", key=ADMIN_KEY)],
                             rounds=rounds, warmup=30, time_limit=120)
        out["chat completions"] = chat
        for name, payload in CASES.items():
            direct_payload = {**payload, "encoding_format": "float"}  # what Warden asks upstream
            out[f"embeddings, {name}"] = added_latency(
                EmbeddingTarget("direct", up_port, EMBEDDING_MODEL, key=UPSTREAM_KEY,
                                path="/v1/embeddings", payload=direct_payload),
                [EmbeddingTarget("warden", port, EMBEDDING_MODEL, key=ADMIN_KEY,
                                 path="/v1/embeddings", payload=payload)],
                rounds=rounds, warmup=30, time_limit=120)
        return out
    finally:
        warden.stop()
        upstream.stop()


def render(results: dict[str, list[LatencyResult]], rounds: int) -> str:
    rows = []
    for name, pair in results.items():
        by = {r.name: r for r in pair}
        direct, warden = by.get("direct"), by.get("warden")
        if direct is None or warden is None or warden.added_ms is None:
            rows.append(f"| {name} | – | – | – | – | – | errors |")
            continue
        over = warden.server_overhead_ms
        rows.append(
            f"| {name} | {direct.latency_ms.median:.3f} | {warden.latency_ms.median:.3f} | "
            f"{warden.added_ms.median:.3f} | {warden.added_ms.iqr:.3f} | "
            f"{over.median if over else float('nan'):.3f} | {direct.errors + warden.errors} |")
    pinned = "pinned (Warden core 0; simulator and client core 1)" if CAN_PIN else "not pinned"
    return "\n".join([
        SECTION, "",
        f"`python -m bench.embeddings` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {pinned}; "
        f"{rounds} rounds per row after 30 warm-up rounds, the targets of a row interleaved. "
        "Method as in section 1 (added latency = Warden − direct in the same round, the "
        "simulator's `/v1/chat/completions` and `/v1/embeddings`, one keep-alive connection "
        "each); the chat row is measured in the same run for comparison. The direct "
        "embeddings call always asks for floats (what Warden asks of the upstream); the base64 "
        "row is Warden encoding 16 × 1536 float32 vectors itself.", "",
        "| endpoint | direct median (ms) | through Warden median (ms) | added median (ms) "
        "| added IQR (ms) | x-warden-overhead-ms median | errors |",
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
