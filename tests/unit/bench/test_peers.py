"""Issue 19's benchmark pieces: the peers table and targets, the unpinned pass, and
reaching a target that listens in another network namespace (Portkey's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from bench.clients import Conn, Target
from bench.peers import load_point, tree_cpu_s, unpinned
from bench.procs import ROOT, Proc, free_port
from bench.render import targets
from bench.render_peers import peer_targets, peers_section, scaling


def _load(target: str, c: int, rps: float, cpu_us: float | None, errors: int = 0) -> dict:
    return {"target": target, "connections": c, "rps": rps, "errors": errors, "p50_ms": 1.0,
            "p99_ms": 2.0, "server_cpu_s": 1.0, "wrk_cpu_s": 0.5, "upstream_cpu_s": 0.2,
            "server_cpu_us_per_req": cpu_us}


RES = {"load": [_load("warden", 64, 3000.0, 300.0), _load("warden-2w", 64, 3600.0, 330.0),
                _load("litellm", 64, 60.0, 15000.0), _load("portkey", 64, 1200.0, 800.0, errors=2)],
       "latency": [{"name": "warden", "added_ms": {"median": 0.4}},
                   {"name": "portkey", "added_ms": {"median": 1.6}}],
       "latency_unpinned": [{"name": "warden", "added_ms": {"median": 0.7}}],
       "portkey_version": "1.15.2", "litellm_version": "1.0"}


def test_scaling_takes_the_load_generator_out_through_cpu_per_request() -> None:
    measured, projected = scaling(RES)
    assert measured == pytest.approx(1.2)
    assert projected == pytest.approx(2 * 300 / 330)  # each worker on a core of its own


def test_scaling_compares_with_the_one_worker_run_as_the_two_are_when_measured() -> None:
    res = {**RES, "load": [*RES["load"], _load("warden-unpinned", 64, 2400.0, 360.0)]}
    measured, projected = scaling(res)
    assert measured == pytest.approx(3600 / 2400)
    assert projected == pytest.approx(2 * 360 / 330)
    rows = {r[0]: r for r in peer_targets(res)}
    assert "both unpinned" in rows["2 workers against 1 at c=64, req/s as measured"][2]


def test_peer_targets_judge_each_ratio_against_its_goal() -> None:
    rows = {r[0]: r for r in peer_targets(RES)}
    lite = rows["throughput at c=64 against LiteLLM"]
    assert lite[1].startswith("≥ 40×") and lite[2].startswith("50.0×") and lite[3] is True
    port = rows["throughput at c=64 against Portkey"]
    assert port[2].startswith("2.5×") and port[3] is False
    assert rows["2 workers against 1 at c=64, req/s as measured"][3] is False
    assert rows["… from server CPU per request (load generator's cost taken out)"][3] is True


def test_latency_targets_are_ratios_to_the_direct_round_trip_of_the_same_pass() -> None:
    direct = {"name": "direct", "latency_ms": {"median": 0.5}}
    res = {**RES, "latency": [direct, *RES["latency"]],
           "latency_unpinned": [{**direct, "latency_ms": {"median": 0.6}}, *RES["latency_unpinned"]],
           "stream": [{"name": "warden", "ttft_added_ms": {"median": 0.5}, "chunks_in": 50,
                       "chunks_out": [50, 50]}]}
    rows = {r[0]: r for r in targets(res)}
    assert rows["added latency, sequential, median, pinned"][2:] == [
        "0.8× (0.400 ms added, direct 0.500 ms)", "met"]
    assert rows["added latency, sequential, median, unpinned"][2:] == [
        "1.2× (0.700 ms added, direct 0.600 ms)", "**not met**"]
    # a streamed first token may cost no more than a whole non-streamed request adds
    assert rows["streaming TTFT overhead, median"][2:] == ["0.500 ms vs 0.400 ms (1.25×)", "**not met**"]
    assert rows["chunks in = chunks out"][3] == "met"


def test_a_2_worker_start_failure_is_a_target_not_met() -> None:
    res = {**RES, "load": [r for r in RES["load"] if r["target"] != "warden-2w"],
           "warden-2w_error": "nothing listens"}
    rows = {r[0]: r for r in peer_targets(res)}
    assert rows["2 workers against 1 at c=64"][3] is False
    assert "warden-2w: not measured: nothing listens" in "".join(peers_section(res))


def test_peers_table_has_a_column_per_peer_and_ratios() -> None:
    text = "\n".join(peers_section(RES))
    assert "| figure | Warden | Warden, 2 workers | LiteLLM | Portkey | Warden vs LiteLLM |" in text
    # added latency: Portkey 1.6 ms against Warden's 0.4 ms -> 4.0× better
    assert "| added latency, pinned, median (ms) | 0.400 | – | – | 1.600 | – | 4.0× |" in text
    assert "| req/s at c=64 | 3,000.0 | 3,600.0 | 60.0 | 1,200.0 | 50.0× | 2.5× |" in text
    assert "| … errors at c=64 | 0 | 0 | 0 | 2 | – | – |" in text
    assert "TTFT" not in text and "c=16" not in text  # not measured: no empty rows


def test_unpinned_frees_a_pinned_process_then_restores_it() -> None:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        pytest.skip("needs taskset and 2 cores")
    popen = subprocess.Popen(["taskset", "-c", "0", "sleep", "30"], start_new_session=True)
    proc = Proc("sleep", popen, ROOT / "unused.log")
    try:
        deadline = time.monotonic() + 5
        while os.sched_getaffinity(popen.pid) != {0} and time.monotonic() < deadline:
            time.sleep(0.01)  # until taskset has exec'd sleep
        with unpinned([proc]):
            assert os.sched_getaffinity(popen.pid) == set(range(os.cpu_count() or 1))
        assert os.sched_getaffinity(popen.pid) == {0}
    finally:
        popen.kill()
        popen.wait()


def _in_namespace_upstream(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["unshare", "-n", "bash", "-c",
         f"ip link set lo up && exec {sys.executable} -m bench.upstream_proc --port {port}"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_target_in_another_network_namespace_is_reached_inside_it(tmp_path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip")
    port = free_port()
    popen = _in_namespace_upstream(port)
    try:
        outside = Target("direct", port, "gpt-4o-mini", key="sk-x")
        inside = Target("direct", port, "gpt-4o-mini", key="sk-x",
                        extra={"x-portkey-provider": "openai"}, netns=f"/proc/{popen.pid}/ns/net")
        deadline, status = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            try:
                c = Conn(inside, timeout=5)
                status, _, body, _ = c.post(inside.body())
                c.close()
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200 and b"chat.completion" in body
        assert inside.headers()["x-portkey-provider"] == "openai"
        with pytest.raises(OSError):  # nothing listens on that port in this namespace
            Conn(outside, timeout=2).post(outside.body())
        # and wrk goes in with nsenter (the CPU it spends is counted)
        if shutil.which("wrk") and shutil.which("nsenter"):
            server = Proc("up", popen, tmp_path / "up.log")
            row = load_point(inside, 2, 1, cpus=None, log=tmp_path / "wrk.log", server=server,
                             upstream=server)
            assert row["requests"] > 0 and row["errors"] == 0
            assert row["server_cpu_s"] is not None and row["wrk_cpu_s"] > 0
            assert tree_cpu_s(popen.pid) > 0
    finally:
        os.killpg(popen.pid, 9)
        popen.wait()
