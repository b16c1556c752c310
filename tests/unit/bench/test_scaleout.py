"""``bench/scaleout.py``: reading Redis MONITOR lines and the section it writes from saved results."""

from __future__ import annotations

import hashlib

import orjson

from bench.scaleout import TITLE, _monitor_window, _script_names, render
from warden.state import _redis_scripts as lua

RATE_SHA = hashlib.sha1(lua.RATE.encode()).hexdigest()
LINES = [
    "OK",
    f'100.000001 [9 127.0.0.1:5000] "EVALSHA" "{RATE_SHA}" "4" "k1"',
    '100.000002 [9 lua] "HMGET" "k1" "a"',
    '100.000003 [9 lua] "HSET" "k1" "a" "1"',
    '100.500000 [9 127.0.0.1:5000] "GET" "wbench:r:x"',
    '100.600000 [0 127.0.0.1:6000] "GET" "someone-else"',  # another db: not ours
    '101.000000 [9 127.0.0.1:5000] "GET" "too-late"',  # outside the window
    f'100.700000 [9 127.0.0.1:5000] "EVAL" "{lua.FINISH}" "1" "r"',
]


def test_monitor_window_counts_one_db_names_scripts_and_keeps_lua_apart() -> None:
    names = _script_names()
    assert names[RATE_SHA] == "RATE"
    got = _monitor_window(LINES, 100.0, 101.0, 9, names)
    assert dict(got) == {"EVALSHA RATE": 1, "(inside Lua) HMGET": 1, "(inside Lua) HSET": 1,
                         "GET": 1, "EVAL FINISH": 1}
    assert dict(_monitor_window(LINES, 100.0, 101.0, 0, names)) == {"GET": 1}


def _lat(name: str, median: float, added: float | None) -> dict:
    s = {"n": 10, "median": median, "p25": median - 0.1, "p75": median + 0.1, "p99": median + 1}
    a = None if added is None else {**s, "median": added, "p25": added - 0.2, "p75": added + 0.2}
    return {"name": name, "latency_ms": s, "added_ms": a, "server_overhead_ms": None, "errors": 0}


def test_render_from_saved_results() -> None:
    pg = {"xact_commit": 1.0, "xact_rollback": 1.1, "tup_inserted": 1.0, "tup_updated": 0.0,
          "scan:spend": 0.0, "scan:api_keys": 0.5}
    kind = {"commands_per_request": 4.0, "commandstats_per_request": 38.0, "pg_per_request": pg,
            "by_command": {"EVALSHA RATE": 1.0, "GET": 1.0, "(inside Lua) HSET": 5.0,
                           "(inside Lua) HMGET": 6.5}}
    res = orjson.loads(orjson.dumps({
        "started": "2026-12-03 11:00:00", "quick": True, "pinned": True,
        "load_before": [2.0, 1, 1], "load_after": [3.0, 1, 1],
        "latency": [_lat("direct", 0.5, None), _lat("warden-a", 8.0, 7.5)],
        "load": [{"target": "pair", "connections": 16, "rps": 600.0, "p50_ms": 20.0, "p99_ms": 70.0,
                  "errors": 0, "per_instance_rps": [310.0, 290.0]},
                 {"target": "one", "connections": 16, "rps": 300.0, "p50_ms": 50.0, "p99_ms": 90.0,
                  "errors": 0},
                 {"target": "direct", "connections": 64, "rps": 8000.0, "p50_ms": 5.0, "p99_ms": 9.0,
                  "errors": 0}],
        "counts": {"requests": 50, "idle_window_s": 14.0, "idle_commands": 0, "idle_pg_xact_per_s": 6.5,
                   "chat": kind},
    }))
    text = render(res)
    assert text.startswith(TITLE + "\n")
    assert "load average 2.0 before, 3.0 after" in text and "warden-a pinned to core 0" in text
    assert "| warden-a | 8.000 | 7.500 | 7.300–7.700 | – | 10 | 0 |" in text
    assert "| 16 | pair (a + b, c/2 each) | 600.0 | 20.0 | 70.0 | 0 | 2.00× | 310, 290 |" in text
    assert "| 16 | one (a, b paused) | 300.0 | 50.0 | 90.0 | 0 | 1.00× |  |" in text
    assert "answers 8,000 req/s" in text
    assert ("| chat, non-streamed | 4.000 | 38.0 | 1.000 | 1.100 | 1.000 | 0.000 | api_keys 0.5 |"
            in text)
    assert "| chat, non-streamed | (commands the scripts run inside Redis) | 11.5 |" in text
    assert "| chat, non-streamed | EVALSHA RATE | 1.000 |" in text
    assert render(None) == ""
