"""The chat WebSocket and binary frames: answered with a typed error, never a crash."""

from __future__ import annotations

import orjson
import pytest
from tests.support.agents import connect_provider, types_of
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.app import ADMIN_KEY, LiveWarden
from warden.config import Settings
from warden.testing.upstream import Behaviour, UpstreamServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def up():
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def live(settings: Settings, up: UpstreamServer):
    server = LiveWarden(settings).start()
    server.call(connect_provider(server.services, up))
    yield server
    server.stop()


async def _until_end(ws) -> list[dict]:
    events = []
    while True:
        events.append(orjson.loads(await ws.recv()))
        if events[-1]["type"] in ("run.completed", "run.failed"):
            return events


async def test_binary_frames_get_an_error_and_the_socket_goes_on(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="slow " * 20, token_delay=0.02), Behaviour(text="after"))
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.send(b"\x00\x01binary")
        idle = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"message": "talk"}).decode())
        await ws.recv()  # run.started: the turn is under way
        await ws.send(b'{"message": "sneaky"}')  # binary, mid-turn: the listener must not crash
        during = await _until_end(ws)
        await ws.send(orjson.dumps({"message": "again"}).decode())
        second = await _until_end(ws)
    binary_error = {"type": "error", "error": {"type": "invalid_request_error", "code": "binary_frame",
                                               "message": idle["error"]["message"], "status": 422}}
    assert idle == binary_error and "text frames" in idle["error"]["message"]
    assert binary_error in during and types_of(during)[-1] == "run.completed"
    assert types_of(second)[-1] == "run.completed"


async def test_a_binary_auth_message_is_refused_cleanly(live: LiveWarden) -> None:
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": ADMIN_KEY}))  # bytes: a binary frame
        refused = orjson.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert refused["error"]["code"] == "invalid_api_key"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
