"""Failover: a dead primary (refused / 500 / timeout) in front of a healthy backup.

Each mode gets its own model name served by two credentials, primary first, so
``openai/<model>`` walks primary -> backup. The primary simulator runs on a
thread of this process so the requests it received can be counted; the backup
runs in its own process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.clients import Conn, Target
from bench.procs import HOST, free_port
from bench.stats import Summary, summarize
from bench.targets import ADMIN_KEY, add_credential, start_upstream
from warden.testing.upstream import Behaviour, UpstreamServer

MODES = ("refused", "500", "timeout")


@dataclass
class FailoverResult:
    mode: str
    first_ttfb_ms: float  # first request: the primary is tried (with its retries) then the backup
    open_ttfb_ms: Summary | None  # after the primary's breaker opened
    baseline_ttfb_ms: Summary  # same request, healthy primary
    attempts_first: int
    requests_to_primary_after_open: int | None  # None: cannot be counted (nothing listens)
    breaker_opened_after: int | None  # the first request that skipped the primary (1-based)
    errors: int


def _credentials(port: int, model: str, primary_url: str, backup_url: str) -> None:
    add_credential(port, None, label=f"primary-{model}", base_url=primary_url, models=[model])
    add_credential(port, None, label=f"backup-{model}", base_url=backup_url, models=[model])


def run_failover(warden_port: int, *, requests: int, logs: Path) -> list[FailoverResult]:
    results = []
    # The backup runs in its own process on uvloop, like the main simulator: a simulator
    # on a thread of this (client) process adds a ~40 ms stall to every stream.
    backup_proc, backup_port = start_upstream(logs, cpus="1", name="failover-backup")
    backup = f"http://{HOST}:{backup_port}/v1"
    try:
        base_model = "fo-healthy"
        _credentials(warden_port, base_model, backup, backup)
        target = Target("warden", warden_port, f"openai/{base_model}", key=ADMIN_KEY)
        conn = Conn(target)
        body = target.body(stream=True)
        baseline = []
        for _ in range(requests):
            s = conn.stream(body)
            if s.ttft_s is not None:
                baseline.append(s.ttft_s * 1000)
        base = summarize(baseline)
        for mode in MODES:
            primary: UpstreamServer | None = None
            if mode == "refused":
                url = f"http://{HOST}:{free_port()}/v1"
            else:
                primary = UpstreamServer("openai", default=Behaviour(status=500) if mode == "500"
                                         else Behaviour(delay=30.0)).start()
                url = primary.base_url
            model = f"fo-{mode}"
            _credentials(warden_port, model, url, backup)
            target = Target("warden", warden_port, f"openai/{model}", key=ADMIN_KEY)
            conn = Conn(target, timeout=60)
            body = target.body(stream=True)
            first_ttfb = float("nan")
            open_ttfb: list[float] = []
            errors = 0
            attempts_first = 0
            opened_at: int | None = None  # index of the first request that skipped the primary
            primary_before_open = 0
            for i in range(requests):
                before = len(primary.requests) if primary else 0
                s = conn.stream(body)
                attempts = int(conn.last_headers.get("x-warden-attempts", 0))
                if s.ttft_s is None:
                    errors += 1
                    conn.close()
                    conn = Conn(target, timeout=60)
                    continue
                if i == 0:
                    first_ttfb, attempts_first = s.ttft_s * 1000, attempts
                if attempts == 1 and opened_at is None:  # served on the first try: primary skipped
                    opened_at, primary_before_open = i, before
                if opened_at is not None:
                    open_ttfb.append(s.ttft_s * 1000)
            conn.close()
            after_open = None
            if primary is not None:
                if opened_at is not None:
                    after_open = len(primary.requests) - primary_before_open
                primary.stop()
            results.append(FailoverResult(
                mode, first_ttfb, summarize(open_ttfb) if open_ttfb else None, base,
                attempts_first, after_open, None if opened_at is None else opened_at + 1, errors))
    finally:
        backup_proc.stop()
    return results
