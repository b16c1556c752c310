"""An upstream that echoes our provider key back (issue 13, item 2).

The key is shaped so that no redaction pattern catches it: only the exact-secret
registry (``logs.register_secret``) can. It must reach no member's reply
(non-stream, stream before the first token, a mid-stream error event, an agent
chat), no log record, and no byte of the database files.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import client_for
from warden import logs
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer

PLAIN_KEY = "abc123PLAINKEYnopattern"  # 23 characters, no known prefix: no pattern matches it
ECHO = f"Incorrect API key provided: {PLAIN_KEY}. You can find your API key in your dashboard."
BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_the_key_is_invisible_to_the_patterns() -> None:
    """The premise: without the registry, redaction would let this key through."""
    registry = logs.SecretRegistry()
    assert registry.scrub(ECHO) == ECHO
    assert PLAIN_KEY in logs._SECRET.sub("[REDACTED]", ECHO)


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def member(services: Services, up: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as admin:
        r = await admin.post("/api/byok", json={
            "provider": "openai", "label": "plain", "api_key": PLAIN_KEY, "base_url": up.base_url,
            "models": [{"id": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6}]})
        assert r.status_code == 201, r.text
        r = await admin.post("/api/keys", json={"name": "someone", "role": "member"})
        assert r.status_code == 201, r.text
        raw = r.json()["key"]
    # A fresh process knows the key only from the database: forget what create
    # registered, so the gateway's own decryption must register it again.
    logs._secrets.clear()
    async with client_for(services, key=raw) as c:
        yield c


def _no_key(text: str) -> None:
    assert PLAIN_KEY not in text
    assert "[REDACTED]" in text  # the upstream text was passed on, cleaned


async def test_an_echoed_key_reaches_no_member_reply(member: httpx.AsyncClient, up: UpstreamServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    up.enqueue(Behaviour(status=401, error_type="invalid_api_key", error_message=ECHO))
    r = await member.post("/v1/chat/completions", json=BODY)
    assert (r.status_code, r.json()["error"]["code"]) == (502, "upstream_auth_failed")
    _no_key(r.json()["error"]["message"])
    assert up.last.headers["authorization"] == f"Bearer {PLAIN_KEY}"  # the upstream did get it

    # A stream refused before its first token: the same envelope.
    up.enqueue(Behaviour(status=401, error_type="invalid_api_key", error_message=ECHO))
    r = await member.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert r.status_code == 502
    _no_key(r.json()["error"]["message"])

    # An error event in the middle of a stream.
    up.enqueue(Behaviour(stream_error="server_error", error_message=ECHO, fault_after=2))
    r = await member.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert r.status_code == 200 and '"error"' in r.text
    _no_key(r.text)

    # Anthropic clients through the same gateway.
    up.enqueue(Behaviour(status=401, error_type="invalid_api_key", error_message=ECHO))
    r = await member.post("/v1/messages", json={**BODY, "max_tokens": 16})
    assert r.status_code == 502
    _no_key(r.text)

    # A malformed reply (every retry too): its preview goes to a WARNING line.
    up.enqueue(*[Behaviour(raw=f'{{"broken": "{ECHO}'.encode())] * 3)
    r = await member.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_malformed"
    assert "malformed reply" in caplog.text
    assert PLAIN_KEY not in caplog.text


async def test_an_echoed_key_reaches_no_stored_row(services: Services, member: httpx.AsyncClient,
                                                   up: UpstreamServer, settings, caplog) -> None:  # noqa: ANN001
    caplog.set_level(logging.DEBUG)
    # An agent turn whose model call fails: the run's error is stored with its events.
    up.enqueue(Behaviour(status=401, error_type="invalid_api_key", error_message=ECHO))
    r = await member.post("/api/chat", json={"message": "Hello"})
    assert PLAIN_KEY not in r.text
    run = r.json().get("run_id") or r.json()["error"].get("run_id")
    if run:
        events = await member.get(f"/api/runs/{run}/events")
        assert PLAIN_KEY not in events.text
    # The admin's key test, audited.
    async with client_for(services) as admin:
        cred = next(c for c in (await admin.get("/api/byok")).json() if c["label"] == "plain")
        up.enqueue(Behaviour(status=401, error_type="invalid_api_key", error_message=ECHO))
        r = await admin.post(f"/api/byok/{cred['id']}/test")
        assert r.status_code == 200 and r.json()["status"] != "ok"
        assert PLAIN_KEY not in r.text
        assert PLAIN_KEY not in (await admin.get("/api/audit")).text
    await services.spend.flush()
    data = b"".join(p.read_bytes() for p in Path(settings.data_dir).glob("warden.db*"))
    assert b"Incorrect API key provided" in data  # the failure was stored...
    assert PLAIN_KEY.encode() not in data  # ...without the key
    assert PLAIN_KEY not in caplog.text


async def test_the_admin_and_master_keys_are_registered(tmp_path: Path) -> None:
    """Whatever shape they have, the bootstrap admin key and the master key are redacted
    by value once the services start (the master key's base64 may hold '+' and '/',
    which split it for the patterns)."""
    from warden.config import load_settings

    logs._secrets.clear()
    svc = await Services.start(load_settings(data_dir=tmp_path / "d", access_log=False))
    try:
        admin = (tmp_path / "d" / "admin.key").read_text().strip()
        master = (tmp_path / "d" / "master.key").read_text().strip()
        assert logs.redact(f"a {admin} m {master}") == "a [REDACTED] m [REDACTED]"
    finally:
        await svc.close()
        logs._secrets.clear()


async def test_the_suite_scan_sees_a_leak_in_a_reply_a_log_line_and_a_file(tmp_path: Path) -> None:
    """The byte scan every test runs under (tests/support/secret_scan.py) can fail:
    a registered key in a reply, a log record or a data file is each a finding."""
    from tests.support.secret_scan import SCAN, ScanningApp, ScanningHandler, data_files

    async def leaky(scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": PLAIN_KEY[:10].encode(), "more_body": True})
        await send({"type": "http.response.body", "body": PLAIN_KEY[10:].encode()})  # split in two

    logs.register_secret("cred:scan-check", PLAIN_KEY)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ScanningApp(leaky)),
                                     base_url="http://t") as c:
            assert (await c.get("/leak")).text == PLAIN_KEY
        assert SCAN.take() == ["cred:scan-check in reply to GET /leak"]

        # A record the server would have redacted is no finding; one it would not is.
        handler = ScanningHandler()
        handler.emit(logging.makeLogRecord({"name": "warden.x", "msg": f"key {PLAIN_KEY}"}))
        assert SCAN.take() == []
        handler.emit(logging.makeLogRecord({"name": "warden.access", "msg": f"key {PLAIN_KEY}"}))
        assert SCAN.take() == ["cred:scan-check in log line of warden.access"]

        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "warden.db").write_bytes(b"\0row\0" + PLAIN_KEY.encode() + b"\0")
        SCAN.check_files(data_files(tmp_path))
        assert SCAN.take() == ["cred:scan-check in file warden.db"]
    finally:
        logs.forget_secret("cred:scan-check")
        (tmp_path / "data" / "warden.db").unlink(missing_ok=True)
