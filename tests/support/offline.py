"""Third-party Python clients (the openai and anthropic SDKs, openai-agents,
langchain, pydantic-ai) run as subprocesses inside ``offline-run``: a network
namespace with only loopback, the given ports bridged in, telemetry off. Nothing
such a library does can leave the machine, whatever its defaults.

A client is a script in ``tests/e2e/clients/`` serving named steps over a pipe
(``_serve.py``): ``Client.call(step, **args)`` returns the step's JSON, and
``Client.raises(kind, step, **args)`` the SDK exception it raised. One process per
test (imports cost a second or more); the test scripts its simulators between steps."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
OFFLINE_RUN = REPO.parent / "shared" / "tools" / "offline-run"
PYTHON = REPO / ".venv" / "bin" / "python"
CLIENTS = REPO / "tests" / "e2e" / "clients"

OFFLINE = os.geteuid() == 0 and shutil.which("unshare") is not None and OFFLINE_RUN.exists()
SKIP_REASON = "offline-run needs root and unshare (CI has both)"

# Each library's own switches: no traces, telemetry, update or hub lookups.
QUIET = {"OPENAI_AGENTS_DISABLE_TRACING": "1", "LANGCHAIN_TRACING_V2": "false",
         "LANGSMITH_TRACING": "false", "LANGSMITH_TRACING_V2": "false", "LOGFIRE_SEND_TO_LOGFIRE": "false",
         "LOGFIRE_IGNORE_NO_CONFIG": "1", "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "1",
         "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
         "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


class ClientRaised(AssertionError):
    """An exception the SDK raised in the subprocess, as its class name(s), status and body."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(f"{info['type']}: {info['message']}")
        self.type: str = info["type"]
        self.mro: list[str] = info["mro"]
        self.status_code: int | None = info["status_code"]
        self.body: Any = info["body"]


class Client:
    """One client script in ``offline-run``; a context manager that ends it."""

    def __init__(self, script: str, *, ports: list[int], env: dict[str, str] | None = None,
                 timeout: float = 120) -> None:
        if not OFFLINE:
            pytest.skip(SKIP_REASON)
        self.timeout = timeout
        self._home = tempfile.mkdtemp(prefix="offline-client-")
        self._stderr = tempfile.TemporaryFile()
        full_env = {"PATH": os.environ["PATH"], "HOME": self._home, **QUIET, **(env or {})}
        cmd = [str(OFFLINE_RUN), *[a for p in ports for a in ("--port", str(p))], "--",
               str(PYTHON), str(CLIENTS / f"{script}.py")]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=full_env, cwd=self._home, text=True)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def call(self, step: str, **args: Any) -> Any:
        """Run one step; its result, or ``ClientRaised`` if the SDK raised."""
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(json.dumps({"call": step, "args": args}) + "\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self._proc.kill()
            self._proc.wait()
            raise AssertionError(f"client {step!r} gave no reply (rc={self._proc.returncode}):\n"
                                 f"{self._stderr_tail()}")
        reply = json.loads(line)
        if "raised" in reply:
            raise ClientRaised(reply["raised"])
        return reply["ok"]

    def raises(self, kind: str, step: str, **args: Any) -> ClientRaised:
        """Run a step that must raise ``kind`` (or a subclass of it, as ``pytest.raises``)."""
        with pytest.raises(ClientRaised) as exc:
            self.call(step, **args)
        assert kind in exc.value.mro, exc.value
        return exc.value

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warden_client(script: str, live: Any, key: str, **env: str) -> Client:
    """``script`` pointed at a live Warden (the SDKs' own base-URL and key variables)."""
    return Client(script, ports=[live.port], env={
        "OPENAI_BASE_URL": f"{live.url}/v1", "OPENAI_API_KEY": key,
        "ANTHROPIC_BASE_URL": live.url, "ANTHROPIC_API_KEY": key, **env})


def run_client(script: str, step: str, *, ports: list[int], env: dict[str, str] | None = None,
               **args: Any) -> Any:
    """A one-step client: start it, run ``step``, end it."""
    with Client(script, ports=ports, env=env) as client:
        return client.call(step, **args)
