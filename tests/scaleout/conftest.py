"""Two real ``warden serve`` processes sharing one PostgreSQL and one Redis,
in front of loopback provider simulators."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tests.support.app import ADMIN_KEY, PG_URL, REDIS_URL, reset_pg
from warden.testing.upstream import UpstreamServer

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="WARDEN_TEST_DATABASE_URL is not set"),
    pytest.mark.skipif(not REDIS_URL, reason="WARDEN_TEST_REDIS_URL is not set"),
]

UPSTREAM_KEY = "sk-up-openai-0123456789"
MASTER_KEY = base64.b64encode(b"k" * 32).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """One ``python -m warden serve`` subprocess."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = data_dir.parent / f"{name}.log"
        full = {**os.environ, **env, "WARDEN_DATA_DIR": str(data_dir), "WARDEN_PORT": str(self.port)}
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "warden", "serve"], env=full,
                                     stdout=self._log_fh, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n{self.log.read_text()[-3000:]}")

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log_fh.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"wscale:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis_sync.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cluster_env(redis_prefix: str) -> dict[str, str]:
    """Settings both instances share; a test may add to them before ``cluster`` starts."""
    return {
        "WARDEN_DATABASE_URL": PG_URL or "", "WARDEN_REDIS_URL": REDIS_URL or "",
        "WARDEN_REDIS_PREFIX": redis_prefix, "WARDEN_ADMIN_KEY": ADMIN_KEY,
        "WARDEN_MASTER_KEY": MASTER_KEY, "WARDEN_ACCESS_LOG": "false", "WARDEN_LOG_LEVEL": "warning",
        "WARDEN_MAX_RETRIES": "0", "WARDEN_BREAKER_FAILURES": "3", "WARDEN_BREAKER_COOLDOWN": "120",
        # A revocation must reach the other instance through the broadcast, not the TTL.
        "WARDEN_KEY_CACHE_TTL": "60",
    }


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[tuple[Instance, Instance]]:
    asyncio.run(reset_pg(PG_URL or ""))
    a = Instance("a", tmp_path / "a", cluster_env)
    try:
        a.wait_ready()  # migrates first; the second then finds the schema in place
    except BaseException:
        a.stop()  # not left running when it never got ready
        raise
    b = Instance("b", tmp_path / "b", cluster_env)
    try:
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEY) as up:
        yield up


def add_credential(admin: httpx.Client, up: UpstreamServer, *, label: str, models: list) -> dict:
    r = admin.post("/api/byok", json={"provider": "openai", "label": label, "api_key": UPSTREAM_KEY,
                                      "base_url": up.base_url, "models": models})
    assert r.status_code == 201, r.text
    return r.json()
