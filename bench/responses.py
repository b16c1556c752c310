"""Added latency and streamed TTFT of ``POST /v1/responses`` beside ``POST /v1/chat/completions``.

    .venv/bin/python -m bench.responses [--rounds 300] [--write]

Inside ``python -m bench.run`` (section "surfaces") on that run's servers; on its own
with a simulator (``bench/upstream_proc.py``) and a ``warden serve`` of its own, in the
same layout (``bench/served.py``): Warden on core 0, simulator and client on core 1.
Non-streamed: four targets in one set of rounds, one request each per round, the order
rotated each round (:func:`bench.latency.added_latency`): the simulator's chat
completions directly, and through Warden as chat completions, as a Responses request
with ``store: false`` and as one with ``store: true`` (OpenAI's default: one database
row written before the reply). The added latency is *Warden - direct* within a round.
The simulator has no Responses endpoint, so the baseline of every row is its chat
completions (what Warden sends upstream). Streamed: the same rotation over the direct
chat stream, Warden's chat stream and Warden's Responses stream (50 content chunks, 2 ms
apart); TTFT = the first content chunk (``response.output_text.delta`` for Responses).
``--write`` replaces the section "Added latency: /v1/responses" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.clients import Target
from bench.latency import added_latency, streaming
from bench.procs import ROOT
from bench.report import replace_section
from bench.served import STREAM_MODEL, Served, how, plain, revive, revive_streams, serving, stamp
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY

SECTION = "## Added latency: /v1/responses"
PROMPT = "Say hello to the benchmark"


@dataclass
class ResponsesTarget(Target):
    """A target of ``POST /v1/responses``: the same prompt as a Responses input."""

    store: bool = False

    def body(self, *, stream: bool = False, text: str = PROMPT) -> bytes:
        payload: dict = {"model": self.model, "input": text, "store": self.store}
        if stream:
            payload["stream"] = True
        return orjson.dumps(payload)


def run(logs: Path, quick: bool, served: Served | None = None, *, rounds: int | None = None,
        by: str = "python -m bench.run") -> dict:
    rounds = rounds or (100 if quick else 300)
    streams = 20 if quick else 60
    with serving(logs, served) as s:
        model, smodel = f"openai/{MODEL}", f"openai/{STREAM_MODEL}"
        latency = added_latency(
            Target("direct", s.up_port, MODEL, key=UPSTREAM_KEY),
            [Target("chat completions", s.port, model, key=ADMIN_KEY),
             ResponsesTarget("responses, store=false", s.port, model, key=ADMIN_KEY, path="/v1/responses"),
             ResponsesTarget("responses, store=true", s.port, model, key=ADMIN_KEY, path="/v1/responses",
                             store=True)],
            rounds=rounds, warmup=30, time_limit=180)
        stream = streaming(
            Target("direct", s.up_port, STREAM_MODEL, key=UPSTREAM_KEY),
            [Target("chat completions, stream", s.port, smodel, key=ADMIN_KEY),
             ResponsesTarget("responses, stream, store=false", s.port, smodel, key=ADMIN_KEY,
                             path="/v1/responses")],
            rounds=streams, warmup=5, time_limit=120)
    return {**stamp(by), "warden": s.note, "rounds": rounds, "streams": streams,
            "latency": plain(latency), "stream": plain(stream)}


def render(res: dict) -> str:
    results = revive(res["latency"])
    by = {r.name: r for r in results}
    direct = by["direct"]
    chat = by.get("chat completions")
    rows = []
    for r in results:
        if r.name == "direct":
            continue
        if r.added_ms is None:
            rows.append(f"| {r.name} | – | – | – | – | – | – | {r.errors} |")
            continue
        over = r.server_overhead_ms
        vs_chat = (f"{r.added_ms.median - chat.added_ms.median:+.3f}"
                   if chat is not None and chat.added_ms is not None else "–")
        rows.append(
            f"| {r.name} | {r.latency_ms.median:.3f} | {r.added_ms.median:.3f} | {r.added_ms.iqr:.3f} | "
            f"{r.latency_ms.median / direct.latency_ms.median:.1f}× | "
            f"{vs_chat} | {over.median if over else float('nan'):.3f} | {r.errors} |")
    streams = revive_streams(res["stream"])
    s_by = {r.name: r for r in streams}
    s_direct, s_chat = s_by.get("direct"), s_by.get("chat completions, stream")
    s_rows = []
    for r in streams:
        a = r.ttft_added_ms
        vs = (f"{a.median - s_chat.ttft_added_ms.median:+.3f}"
              if a and s_chat and s_chat.ttft_added_ms and r is not s_chat else "–")
        s_rows.append(
            f"| {r.name} | {r.ttft_ms.median:.3f} | {f'{a.median:.3f}' if a else '–'} | "
            f"{f'{a.iqr:.3f}' if a else '–'} | "
            f"{f'{r.ttft_ms.median / s_direct.ttft_ms.median:.1f}×' if s_direct else '–'} | {vs} | "
            f"{r.chunks_in} | {', '.join(map(str, sorted(set(r.chunks_out))))} | {r.incomplete} |")
    return "\n".join([
        SECTION, "",
        f"{how(res)}; {res['warden']}. Non-streamed: {res['rounds']} rounds after 30 warm-up rounds, "
        "the four targets interleaved. Method as in section 1 (added latency = through Warden − the "
        "simulator's `/v1/chat/completions` directly, in the same round, one keep-alive connection "
        "each; the simulator has no Responses endpoint and Warden sends a Responses request upstream "
        "as chat completions). `store=true` (the default) also writes the response to the embedded "
        f"SQLite before the reply. Direct median {direct.latency_ms.median:.3f} ms (on a shared machine "
        "the absolute figures grow with the load; the rows of one run compare).", "",
        "| endpoint | through Warden median (ms) | added median (ms) | added IQR (ms) | of direct "
        "| added vs chat completions (ms) | x-warden-overhead-ms median | errors |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
        f"Streamed ({res['streams']} streams each after 5 warm-up, interleaved; the simulator's "
        "chat stream of 50 content chunks 2 ms apart is the baseline; TTFT = the first chunk carrying "
        "content, `response.output_text.delta` for Responses; TTFT added = through Warden − direct "
        "in the same round):", "",
        "| target | TTFT median (ms) | TTFT added median (ms) | added IQR (ms) | of direct "
        "| added vs chat stream (ms) | chunks in | chunks out | incomplete |",
        "|---|---|---|---|---|---|---|---|---|",
        *s_rows, "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = render(run(Path(tempfile.mkdtemp(prefix="warden-bench-responses-")), False,
                        rounds=args.rounds, by="python -m bench.responses"))
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")
