"""What OpenTelemetry traces cost ``/v1/*``: added latency of ``POST /v1/chat/completions``
with traces off (no OTLP variable: the SDK is not even imported) and on (exported over
OTLP/HTTP to a loopback sink that answers every export at once).

    .venv/bin/python -m bench.tracing [--rounds 3000] [--write]

The layout of ``bench/console.py``: the simulator (``bench/upstream_proc.py``) on core 1
with this client and the sink, each ``warden serve`` on core 0, one OpenAI credential
serving ``gpt-4o-mini``; one request to each target per round, the order rotated each
round (:func:`bench.latency.added_latency`). ``--write`` replaces the section
"Traces and /v1 latency" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.clients import Target
from bench.latency import LatencyResult, added_latency
from bench.procs import CAN_PIN, HOST, ROOT
from bench.report import replace_section
from bench.served import simulator, start_servers, stop_all
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY

SECTION = "## Traces and /v1 latency"


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and drops every export (counted)."""

    exports = 0
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def measure(rounds: int) -> tuple[list[LatencyResult], int]:
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-tracing-"))
    sink = ThreadingHTTPServer((HOST, 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink.server_address[1]}"}
    try:
        with simulator(logs) as up_port:
            servers = start_servers(logs, up_port, {"traces off": {}, "traces on": {}}, env={"traces on": on})
            try:
                model = f"openai/{MODEL}"
                results = added_latency(Target("direct", up_port, MODEL, key=UPSTREAM_KEY),
                                        [Target(name, port, model, key=ADMIN_KEY)
                                         for name, (_, port) in servers.items()],
                                        rounds=rounds, warmup=30, time_limit=300)
                return results, _Sink.exports
            finally:
                stop_all(servers)
    finally:
        sink.shutdown()


def render(results: list[LatencyResult], rounds: int, exports: int) -> str:
    by = {r.name: r for r in results}
    off = by.get("traces off")
    rows = []
    for r in results:
        if r.name == "direct" or r.added_ms is None:
            continue
        vs_off = (f"{r.added_ms.median - off.added_ms.median:+.3f}"
                  if off is not None and off.added_ms is not None else "–")
        over = r.server_overhead_ms
        rows.append(f"| {r.name} | {r.latency_ms.median:.3f} | {r.added_ms.median:.3f} | {r.added_ms.iqr:.3f} | "
                    f"{vs_off} | {over.median if over else float('nan'):.3f} | {r.errors} |")
    pinned = "pinned (Warden core 0; simulator, client and OTLP sink core 1)" if CAN_PIN else "not pinned"
    return "\n".join([
        SECTION, "",
        f"`python -m bench.tracing` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {pinned}; {rounds} rounds "
        "after 30 warm-up rounds. Method as in section 1 (added latency = through Warden − the simulator "
        "directly, in the same round). Two servers interleaved in one set of rounds: no OTLP variable "
        "(traces off: the SDK is not imported, the gateway pays a None check), and "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` set (a request span and one attempt span per request, batched and "
        f"exported over OTLP/HTTP to a loopback sink: {exports} exports received). Load average "
        f"{os.getloadavg()[0]:.1f} at the end.", "",
        "| server | through Warden median (ms) | added median (ms) | added IQR (ms) | vs traces off (ms) "
        "| x-warden-overhead-ms median | errors |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    results, exports = measure(args.rounds)
    report = render(results, args.rounds, exports)
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")
