"""MCP over HTTP connects only to the address the egress check approved: no second DNS
lookup (DNS rebinding), no proxy from the environment, no other host."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from warden.agents.tools.egress import EgressPolicy
from warden.agents.tools.mcp import McpServerError
from warden.agents.tools.toolbox import build_toolbox
from warden.agents.tools.deps import ToolDeps
from warden.store.db import Database

from tests.support.mcp_fixture_server import build_server

NAME = "mcp.rebind.test"  # resolvable only through the resolver below


@pytest.fixture(scope="module")
def mcp_port() -> Iterator[int]:
    # The server checks the Host header too (its own DNS-rebinding guard): it must see NAME.
    app = build_server().streamable_http_app(transport_security=TransportSecuritySettings(
        allowed_hosts=[f"{NAME}:*"]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_config=None, access_log=False, lifespan="on", loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        threading.Event().wait(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)


@pytest.fixture
async def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This loop's resolver answers NAME with 127.0.0.1 once, then with 127.0.0.2 (where
    nothing listens): a rebinding DNS server. Returns the answers it gave."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    answers: list[str] = []

    async def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return await real(host, port, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "127.0.0.2")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    database = Database("sqlite+aiosqlite:///:memory:")
    yield database
    await database.close()


def _deps(db: Database, *allow: str) -> ToolDeps:
    return ToolDeps(db=db, egress=EgressPolicy.from_entries(allow), mcp_stdio_allow=(),
                    mcp_connect_timeout=10.0, mcp_call_timeout=5.0)


def _server(port: int) -> dict:
    return {"name": "web", "transport": "http", "url": f"http://{NAME}:{port}/mcp"}


async def test_the_sdk_client_connects_to_the_checked_address(db: Database, mcp_port: int,
                                                              rebinding_dns: list[str]) -> None:
    box = await build_toolbox([], [_server(mcp_port)], deps=_deps(db, "127.0.0.1"))
    try:
        echo = await box.tools["web__echo"].run({"text": "pinned"}, None)  # type: ignore[arg-type]
    finally:
        await box.close()
    assert echo.content == "pinned" and not echo.is_error
    assert rebinding_dns == ["127.0.0.1"]  # looked up once, for the check; never again


async def test_a_name_resolving_to_loopback_is_refused_unless_allowed(db: Database, mcp_port: int,
                                                                     rebinding_dns: list[str]) -> None:
    with pytest.raises(McpServerError, match="loopback"):
        await build_toolbox([], [_server(mcp_port)], deps=_deps(db))


async def test_pinned_client_keeps_the_name_ignores_proxies_and_refuses_other_hosts(
        mcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from warden.agents.tools.pinned_transport import pinned_client

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # a proxy that would refuse everything
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    async with pinned_client(NAME, ["127.0.0.2", "127.0.0.1"], timeout=httpx2.Timeout(5.0)) as client:
        # The first address refuses the connection: the next checked one is tried.
        reached = await client.get(f"http://{NAME}:{mcp_port}/not-here")
        with pytest.raises(httpx2.ConnectError, match="not the host that was checked"):
            await client.get(f"http://127.0.0.1:{mcp_port}/mcp")
    assert reached.status_code == 404  # answered by the MCP server itself
    assert reached.request.url.host == NAME  # the caller still sees the name it asked for
