"""``bench/responses.py``: the Responses body it sends and the table it writes."""

from __future__ import annotations

import orjson

from bench.latency import LatencyResult
from bench.responses import SECTION, ResponsesTarget, render
from bench.stats import summarize


def test_body_and_rendered_table() -> None:
    body = orjson.loads(ResponsesTarget("r", 1, "openai/m", store=True, path="/v1/responses").body())
    assert body == {"model": "openai/m", "input": "Say hello to the benchmark", "store": True}
    s = summarize
    results = [LatencyResult("direct", s([1.0, 1.2]), None),
               LatencyResult("chat completions", s([1.5]), s([0.5]), s([0.1])),
               LatencyResult("responses, store=true", s([2.0]), s([1.0]), None, errors=1),
               LatencyResult("responses, store=false", s([1.6]), None, errors=3)]
    text = render(results, rounds=10)
    assert text.startswith(SECTION + "\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "endpoint" not in line]
    assert rows[0].startswith("| chat completions | 1.500 | 0.500 |") and "+0.000" in rows[0]
    assert "+0.500" in rows[1] and "nan" in rows[1] and rows[1].endswith("| 1 |")
    assert rows[2] == "| responses, store=false | – | – | – | – | – | 3 |"
