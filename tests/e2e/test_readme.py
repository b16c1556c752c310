"""The README's quick start, run as a new user would, against a live ``warden serve``
(a subprocess, fresh HOME, so the default data directory) with the loopback
simulator standing in for OpenAI.

The convention: a fenced block preceded by ``<!-- readme-test [KEY=VALUE …] -->`` is
run; the extraction is strict, so a marker without a block after it, an unknown
key, an unmarked bash/python block in the Quick start, or a block that exits
non-zero fails the test. Keys:

- ``serve``: the block that starts the server (``make serve``). The test starts
  ``warden serve`` from this venv in its place (``make`` would only add the install,
  timed by hand: see BENCHMARKS.md) and waits until it answers.
- ``stdin=provider-key``: the provider key the block reads on stdin (the simulator's).
- ``stdin="…"``: this text (``\\n`` escapes) on stdin.
- ``upstream=tool-call``: the simulator answers the block's first model call with a
  ``current_time`` tool call, and the next one with text.

Bash blocks run one after the other in ``bash -eo pipefail`` with the repository as
the working directory; exported variables carry over to later blocks. Python blocks
run with the ``python`` the earlier blocks put on PATH. Two rewrites stand in for
the real world, nothing else: port 8080 becomes the test's free port, and
``warden byok add openai`` gets ``--base-url`` of the simulator.
"""

from __future__ import annotations

import codecs
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.upstreams import UPSTREAM_KEYS
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall, UpstreamServer

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = re.compile(r"^<!-- readme-test(?P<args>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
KEYS = {"serve", "stdin", "upstream"}


@dataclass
class Block:
    line: int
    lang: str
    code: str
    opts: dict[str, str] = field(default_factory=dict)


def extract(text: str) -> list[Block]:
    """The marked blocks, in order; AssertionError for anything loose."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            opts = {}
            for word in shlex.split(marker["args"]):
                key, _, value = word.partition("=")
                assert key in KEYS, f"README.md:{i + 1}: unknown readme-test key '{key}'"
                opts[key] = value
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            opening = FENCE.match(lines[j]) if j < len(lines) else None
            assert opening and opening[1] in ("bash", "python"), \
                f"README.md:{i + 1}: a readme-test marker must precede a bash or python block"
            end = next(k for k in range(j + 1, len(lines)) if lines[k].startswith("```"))
            blocks.append(Block(j + 1, opening[1], "\n".join(lines[j + 1:end]) + "\n", opts))
            i = end + 1
            continue
        if fence and fence[1] in ("bash", "python") and section == "Quick start":
            raise AssertionError(f"README.md:{i + 1}: a Quick start block without a readme-test marker")
        if fence:  # skip over an unmarked block elsewhere
            i = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        i += 1
    return blocks


def test_extraction_is_strict() -> None:
    ok = extract("## Quick start\n<!-- readme-test stdin=x -->\n\n```bash\necho hi\n```\n")
    assert [(b.lang, b.code, b.opts) for b in ok] == [("bash", "echo hi\n", {"stdin": "x"})]
    for bad, why in (("## Quick start\n```bash\necho\n```\n", "without a readme-test marker"),
                     ("<!-- readme-test nope=1 -->\n```bash\n```\n", "unknown readme-test key"),
                     ("<!-- readme-test -->\nsome text\n", "must precede")):
        try:
            extract(bad)
        except AssertionError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"accepted: {bad!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "warden serve exited"
        assert time.monotonic() < deadline, f"nothing answered {url}"
        time.sleep(0.2)


def test_the_quick_start_works_from_an_empty_home(tmp_path: Path) -> None:
    blocks = extract(README.read_text())
    assert len(blocks) >= 5 and [b for b in blocks if "serve" in b.opts], "the quick start lost its blocks"
    assert (REPO / ".venv" / "bin" / "activate").exists(), "the README's .venv is this repository's"
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WARDEN_") and not k.endswith("_API_KEY") and k != "VIRTUAL_ENV"}
    env.update(HOME=str(home), WARDEN_PORT=str(port), NO_COLOR="1", COLUMNS="120", TERM="dumb")
    state = tmp_path / "state.sh"
    state.write_text("")
    data = home / ".local" / "share" / "warden"
    outputs: list[str] = []
    server: subprocess.Popen | None = None
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up:
        try:
            for b in blocks:
                if "serve" in b.opts:
                    assert "make serve" in b.code, f"README.md:{b.line}: the serve block runs make serve"
                    server = subprocess.Popen([str(Path(sys.executable).parent / "warden"), "serve"],
                                              env=env, cwd=REPO, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, start_new_session=True)
                    _wait_for(f"http://127.0.0.1:{port}/healthz", server)
                    continue
                code = re.sub(r"(localhost|127\.0\.0\.1):8080", rf"\1:{port}", b.code)
                code = code.replace("warden byok add openai --key -",
                                    f"warden byok add openai --key - --base-url {up.base_url}")
                stdin = b.opts.get("stdin", "")
                if stdin == "provider-key":
                    stdin = UPSTREAM_KEYS["openai"] + "\n"
                else:
                    stdin = codecs.decode(stdin, "unicode_escape")
                if b.opts.get("upstream") == "tool-call":
                    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]),
                               Behaviour(text="It is noon in UTC."))
                if b.lang == "python":
                    script = tmp_path / f"block{b.line}.py"
                    script.write_text(code)
                    code = f"python {shlex.quote(str(script))}\n"
                wrapped = f"source {shlex.quote(str(state))}\n{code}\nexport -p > {shlex.quote(str(state))}\n"
                proc = subprocess.run(["bash", "-eo", "pipefail", "-c", wrapped], input=stdin, env=env,
                                      cwd=REPO, capture_output=True, text=True, timeout=180,
                                      start_new_session=True)
                out = proc.stdout + proc.stderr
                assert proc.returncode == 0, f"README.md:{b.line} failed ({proc.returncode}):\n{code}\n{out}"
                assert "Traceback" not in out and "directly" not in out, f"README.md:{b.line}:\n{out}"
                outputs.append(out)
        finally:
            if server is not None:
                server.terminate()
                logs = server.communicate(timeout=60)[1]
    text = "\n".join(outputs)
    # A chat reply, an approved tool call, a usage table, the curl and SDK answers.
    assert text.count(DEFAULT_TEXT) >= 4, text
    assert "approved by" in text and "It is noon in UTC." in text, text
    assert "cost (USD)" in text and "openai/" in text, text
    # One database, the server's: nothing the CLI ran created another.
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("warden.db")] == [
        (data / "warden.db").relative_to(tmp_path)]
    assert f"export WARDEN_KEY=$(cat {data / 'admin.key'})" in logs
    assert not (data / "server.json").exists()
