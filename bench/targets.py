"""Start the things under test: the upstream simulator, Warden and LiteLLM."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from pathlib import Path

import orjson

from bench.clients import Target
from bench.procs import HOST, OFFLINE_RUN, PY, ROOT, NamespacedProc, Proc, find_child, free_port, start, wait_port

ADMIN_KEY = "wk-bench-admin-0123456789abcdefghijkl"
UPSTREAM_KEY = "sk-bench-upstream-0123456789"
LITELLM_VENV = ROOT / "bench/.litellm-venv"
LITELLM_MASTER = "sk-bench-litellm-master"
LITELLM_PIN = "1.108.7"  # the peer measured since round 4; a new release is a new baseline
MODEL = "gpt-4o-mini"


def start_upstream(logs: Path, *, cpus: str | None = None, name: str = "upstream",
                   extra: list[str] | None = None) -> tuple[Proc, int]:
    port = free_port()
    proc = start(name, [PY, "-m", "bench.upstream_proc", "--port", str(port), *(extra or [])],
                 logs=logs, cpus=cpus)
    wait_port(port, proc)
    return proc, port


# The commit this round of issue 19 began from: the cold-start target is a ratio to it,
# measured in the same run (bench.coldstart_ab builds it as a source tree).
ROUND_START = "04a695d"


def direct_target(port: int) -> Target:
    return Target("direct", port, MODEL, key=UPSTREAM_KEY)


def warden_env(data_dir: Path, port: int, **settings: object) -> dict[str, str]:
    env = {"WARDEN_DATA_DIR": str(data_dir), "WARDEN_ADMIN_KEY": ADMIN_KEY,
           "WARDEN_PORT": str(port), "WARDEN_HOST": HOST}
    env.update({f"WARDEN_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def warden_cmd() -> list[str]:
    # `python -m warden serve` is what the `warden` script runs, and it follows PYTHONPATH to
    # whichever source tree an A/B run selects (older trees have no `warden.entry`).
    return [PY, "-m", "warden", "serve"]


def api(port: int, method: str, path: str, body: object | None = None) -> tuple[int, object]:
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        c.request(method, path, body=orjson.dumps(body) if body is not None else None,
                  headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, orjson.loads(data) if data else None
    finally:
        c.close()


def add_credential(port: int, upstream_port: int | None, *, label: str = "main",
                   base_url: str | None = None, models: list[str] | None = None) -> dict:
    body: dict = {"provider": "openai", "label": label, "api_key": UPSTREAM_KEY,
                  "base_url": base_url or f"http://{HOST}:{upstream_port}/v1"}
    if models is not None:
        body["models"] = [{"id": m} for m in models]
    status, data = api(port, "POST", "/api/byok", body)
    if status != 201:
        raise RuntimeError(f"adding a credential failed: {status} {data}")
    return data  # type: ignore[return-value]


def start_warden(logs: Path, data_dir: Path, *, cpus: str | None = None, name: str = "warden",
                 env_extra: dict[str, str] | None = None, **settings: object) -> tuple[Proc, int]:
    port = free_port()
    proc = start(name, warden_cmd(), logs=logs, cpus=cpus,
                 env={**(env_extra or {}), **warden_env(data_dir, port, **settings)})
    try:
        wait_port(port, proc)
    except BaseException:
        proc.stop()  # not left running when it never listened
        raise
    return proc, port


def warden_target(port: int, model: str = "auto") -> Target:
    return Target("warden", port, model, key=ADMIN_KEY)


# --- LiteLLM -------------------------------------------------------------------------


def ensure_litellm(log: Path) -> Path | None:
    """LiteLLM's proxy in its own virtualenv (never the project's); None if it cannot install."""
    exe = LITELLM_VENV / "bin/litellm"
    if exe.exists():
        return exe
    with open(log, "ab") as fh:
        if not (LITELLM_VENV / "bin/python").exists():
            subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True, stdout=fh, stderr=fh)
        r = subprocess.run([str(LITELLM_VENV / "bin/pip"), "install", "-q", f"litellm[proxy]=={LITELLM_PIN}"],
                           stdout=fh, stderr=fh, timeout=1800)
    return exe if r.returncode == 0 and exe.exists() else None


def litellm_version() -> str | None:
    try:
        out = subprocess.run([str(LITELLM_VENV / "bin/python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def start_litellm(logs: Path, upstream_port: int, *, cpus: str | None = None,
                  extra_models: list[str] | None = None) -> tuple[Proc, Target]:
    exe = LITELLM_VENV / "bin/litellm"
    cfg = logs / "litellm.yaml"
    entries = "".join(
        f"  - model_name: {m}\n"
        "    litellm_params:\n"
        f"      model: openai/{m}\n"
        f"      api_base: http://{HOST}:{upstream_port}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        for m in [MODEL, *(extra_models or [])])
    cfg.write_text(
        "model_list:\n" + entries +
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "PYTHONUNBUFFERED": "1"}
    # Third-party, so inside offline-run (loopback only) like Portkey: the simulator's port
    # is bridged in, and the bench's clients enter LiteLLM's namespace (Target.netns).
    base = start("litellm", [str(OFFLINE_RUN), "--port", str(upstream_port), "--", str(exe), "--config",
                             str(cfg), "--host", HOST, "--port", str(port), "--num_workers", "1"],
                 logs=logs, cpus=cpus, env=env, cwd=logs)
    proc = NamespacedProc(base.name, base.popen, base.log)
    try:
        proc.node_pid = find_child(proc, "litellm", 60.0)
        target = Target("litellm", port, MODEL, key=LITELLM_MASTER, netns=f"/proc/{proc.node_pid}/ns/net")
        wait_answers(target, proc, 180)
    except BaseException:
        proc.stop()
        raise
    return proc, target


def wait_answers(target: Target, proc: Proc, timeout: float) -> None:
    """Until a real chat request succeeds (a proxy may listen before it is ready)."""
    from bench.clients import Conn

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}")
        try:
            c = Conn(target, timeout=30)
            status, _, data, _ = c.post(target.body())
            c.close()
            if status == 200:
                return
            last = f"{status} {data[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{target.name} never answered: {last}")


def cpu_env() -> dict[str, str]:
    return {"nproc": str(os.cpu_count())}
