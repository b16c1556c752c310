"""The benchmark's pure helpers: statistics, wrk output parsing, BENCHMARKS.md merging."""

from __future__ import annotations

import pytest

from bench.report import kept_sections, merge, replace_section, table
from bench.stats import drift_per_min, duration_ms, parse_wrk, percentile, summarize

WRK = """Running 10s test @ http://127.0.0.1:8080/v1/chat/completions
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms    5.01ms  98.00ms   80.00%
  Latency Distribution
     50%   28.50ms
     75%   31.00ms
     90%   35.00ms
     99%    1.20s
  23456 requests in 10.00s, 9.87MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   2345.60
Transfer/sec:      0.99MB
"""


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10.0
    assert percentile([5, 1, 3], 0) == 1.0 and percentile([5, 1, 3], 100) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_has_median_and_quartiles() -> None:
    s = summarize([float(v) for v in range(1, 102)])
    assert (s.n, s.median, s.p25, s.p75, s.iqr) == (101, 51.0, 26.0, 76.0, 50.0)


def test_wrk_durations_in_every_unit() -> None:
    assert duration_ms("812.00us") == pytest.approx(0.812)
    assert duration_ms("1.20s") == 1200.0
    assert duration_ms("2m") == 120_000.0
    with pytest.raises(ValueError):
        duration_ms("fast")


def test_parse_wrk_reads_totals_latency_and_errors() -> None:
    r = parse_wrk(WRK)
    assert (r.requests, r.rps, r.p50_ms, r.p99_ms) == (23456, 2345.6, 28.5, 1200.0)
    assert (r.non_2xx, r.socket_errors, r.errors) == (7, 5, 12)


def test_parse_wrk_without_errors_and_refuses_garbage() -> None:
    clean = WRK.replace("  Socket errors: connect 0, read 2, write 0, timeout 3\n", "").replace(
        "  Non-2xx or 3xx responses: 7\n", "")
    assert parse_wrk(clean).errors == 0
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_drift_is_the_least_squares_slope_per_minute() -> None:
    assert drift_per_min([(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)]) == pytest.approx(2.0)
    assert drift_per_min([(5.0, 1.0)]) == 0.0


def test_merge_keeps_the_usage_section_written_by_others() -> None:
    old = ("# Benchmarks\n\nold numbers\n\n## Usage queries at 1M rows\n\n| q | ms |\n|---|---|\n"
           "| total | 12 |\n\n## Old table\n\nstale\n")
    assert kept_sections(old) == ["## Usage queries at 1M rows\n\n| q | ms |\n|---|---|\n| total | 12 |\n"]
    merged = merge("# Benchmarks\n\nnew numbers\n", old)
    assert "new numbers" in merged and "| total | 12 |" in merged
    assert "old numbers" not in merged and "stale" not in merged
    assert merge("# New\n", None) == "# New\n"


def test_replace_section_swaps_only_its_own_section(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "BENCHMARKS.md"
    replace_section("## Added latency: /v1/embeddings\n\nfirst\n", path)  # no file yet
    assert path.read_text() == "# Benchmarks\n\n## Added latency: /v1/embeddings\n\nfirst\n"
    path.write_text(path.read_text() + "\n## Other\n\nkept\n")
    replace_section("## Added latency: /v1/embeddings\n\nsecond\n", path)
    assert path.read_text() == ("# Benchmarks\n\n## Added latency: /v1/embeddings\n\nsecond\n"
                                "## Other\n\nkept\n")
    replace_section("## New one\n\nx\n", path)
    assert path.read_text().endswith("kept\n\n## New one\n\nx\n")
    assert "Added latency: /v1/embeddings" in kept_sections(path.read_text())[0]


def test_table_formats_numbers_and_missing_values() -> None:
    text = table(["a", "b", "c"], [[1.23456, None, 2345.6]])
    assert text.splitlines()[2] == "| 1.235 | – | 2,345.6 |"
