"""``bench/responses.py``: the Responses body it sends and the tables it writes from saved results."""

from __future__ import annotations

import orjson

from bench.latency import LatencyResult, StreamResult
from bench.responses import SECTION, ResponsesTarget, render
from bench.served import plain
from bench.stats import summarize


def test_body_and_rendered_table() -> None:
    body = orjson.loads(ResponsesTarget("r", 1, "openai/m", store=True, path="/v1/responses").body())
    assert body == {"model": "openai/m", "input": "Say hello to the benchmark", "store": True}
    streamed = orjson.loads(ResponsesTarget("r", 1, "openai/m", path="/v1/responses").body(stream=True))
    assert streamed == {"model": "openai/m", "input": "Say hello to the benchmark", "store": False, "stream": True}
    s = summarize
    results = [LatencyResult("direct", s([1.0, 1.2]), None),
               LatencyResult("chat completions", s([1.5]), s([0.5]), s([0.1])),
               LatencyResult("responses, store=true", s([2.0]), s([1.0]), None, errors=1),
               LatencyResult("responses, store=false", s([1.6]), None, errors=3)]
    streams = [StreamResult("direct", s([4.0]), None, 1.0, 2.0, 50, [50]),
               StreamResult("chat completions, stream", s([5.0]), s([1.0]), 1.0, 2.0, 50, [50]),
               StreamResult("responses, stream, store=false", s([6.0]), s([1.5]), 1.0, 2.0, 50, [50, 49], 2)]
    saved = orjson.loads(orjson.dumps({"by": "python -m bench.run", "at": "2026-12-03 10:00", "load": 2.5,
                                       "pinned": True, "warden": "w", "rounds": 10, "streams": 3,
                                       "latency": plain(results), "stream": plain(streams)}))
    text = render(saved)  # from JSON, as `--render-only` does
    assert text.startswith(SECTION + "\n")
    assert "`python -m bench.run` on 2026-12-03 10:00 UTC, pinned" in text and "load average 2.5" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "endpoint" not in line
            and "target" not in line]
    assert rows[0].startswith("| chat completions | 1.500 | 0.500 |") and "| 1.4× | +0.000 |" in rows[0]
    assert "+0.500" in rows[1] and "nan" in rows[1] and rows[1].endswith("| 1 |")
    assert rows[2] == "| responses, store=false | – | – | – | – | – | – | 3 |"
    assert rows[3].startswith("| direct | 4.000 | – |")
    assert rows[5] == "| responses, stream, store=false | 6.000 | 1.500 | 0.000 | 1.5× | +0.500 | 50 | 49, 50 | 2 |"
