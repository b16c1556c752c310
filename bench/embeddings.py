"""Added latency of ``POST /v1/embeddings`` beside ``POST /v1/chat/completions``.

    .venv/bin/python -m bench.embeddings [--rounds 300] [--write]

Inside ``python -m bench.run`` (section "surfaces") on that run's servers; on its own
with a simulator (``bench/upstream_proc.py``) and a ``warden serve`` of its own, in the
same layout (``bench/served.py``): Warden on core 0, simulator and client on core 1,
one OpenAI credential (``gpt-4o-mini``, ``text-embedding-3-small``). Four
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
from pathlib import Path

import orjson

from bench.clients import Target
from bench.latency import added_latency
from bench.procs import ROOT
from bench.report import replace_section
from bench.served import Served, how, plain, revive, serving, stamp
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY

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


def run(logs: Path, quick: bool, served: Served | None = None, *, rounds: int | None = None,
        by: str = "python -m bench.run") -> dict:
    rounds = rounds or (100 if quick else 300)
    out: dict[str, list[dict]] = {}
    with serving(logs, served) as s:
        out["chat completions"] = plain(added_latency(
            Target("direct", s.up_port, MODEL, key=UPSTREAM_KEY),
            [Target("warden", s.port, f"openai/{MODEL}", key=ADMIN_KEY)],
            rounds=rounds, warmup=30, time_limit=120))
        for name, payload in CASES.items():
            direct_payload = {**payload, "encoding_format": "float"}  # what Warden asks upstream
            out[f"embeddings, {name}"] = plain(added_latency(
                EmbeddingTarget("direct", s.up_port, EMBEDDING_MODEL, key=UPSTREAM_KEY,
                                path="/v1/embeddings", payload=direct_payload),
                [EmbeddingTarget("warden", s.port, EMBEDDING_MODEL, key=ADMIN_KEY,
                                 path="/v1/embeddings", payload=payload)],
                rounds=rounds, warmup=30, time_limit=120))
    return {**stamp(by), "warden": s.note, "rounds": rounds, "rows": out}


def render(res: dict) -> str:
    rows = []
    for name, pair in res["rows"].items():
        by = {r.name: r for r in revive(pair)}
        direct, warden = by.get("direct"), by.get("warden")
        if direct is None or warden is None or warden.added_ms is None:
            rows.append(f"| {name} | – | – | – | – | – | – | errors |")
            continue
        over = warden.server_overhead_ms
        rows.append(
            f"| {name} | {direct.latency_ms.median:.3f} | {warden.latency_ms.median:.3f} | "
            f"{warden.added_ms.median:.3f} | {warden.added_ms.iqr:.3f} | "
            f"{warden.latency_ms.median / direct.latency_ms.median:.1f}× | "
            f"{over.median if over else float('nan'):.3f} | {direct.errors + warden.errors} |")
    return "\n".join([
        SECTION, "",
        f"{how(res)}; {res['warden']}. "
        f"{res['rounds']} rounds per row after 30 warm-up rounds, the targets of a row interleaved. "
        "Method as in section 1 (added latency = Warden − direct in the same round, the "
        "simulator's `/v1/chat/completions` and `/v1/embeddings`, one keep-alive connection "
        "each); the chat row is measured in the same run for comparison. The direct "
        "embeddings call always asks for floats (what Warden asks of the upstream); the base64 "
        "row is Warden encoding 16 × 1536 float32 vectors itself.", "",
        "| endpoint | direct median (ms) | through Warden median (ms) | added median (ms) "
        "| added IQR (ms) | of direct | x-warden-overhead-ms median | errors |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = render(run(Path(tempfile.mkdtemp(prefix="warden-bench-embeddings-")), False,
                        rounds=args.rounds, by="python -m bench.embeddings"))
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")
