"""A real MCP server for the agent-tool tests, written with the official SDK.

Run as a script it serves over stdio; ``build_server()`` also backs the
streamable-HTTP test server (uvicorn on loopback).
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations


def build_server(*, crash_tool: bool = False) -> MCPServer:
    """``crash_tool``: also offer ``crash``, which ends the server's process (the MCP
    gateway's upstream-crash test)."""
    server = MCPServer("warden-test-fixture")

    if crash_tool:
        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def crash(code: int = 1) -> str:
            """End the server process at once."""
            import os

            os._exit(code)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
    def wipe(target: str) -> str:
        """Pretend to delete something."""
        return f"wiped {target}"

    @server.tool()
    def add(a: int, b: int) -> dict[str, int]:
        """Add two integers (structured result)."""
        return {"sum": a + b}

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    def fail(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"failed on purpose: {reason}")

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await anyio.sleep(seconds)
        return "done"

    @server.tool()
    def big(size: int) -> str:
        """A long text."""
        return "y" * size

    return server


if __name__ == "__main__":
    if "--crash" in sys.argv:
        print("fixture refuses to start: bad configuration", file=sys.stderr)
        sys.exit(3)
    if "--hang" in sys.argv:
        import time

        time.sleep(60)
    build_server(crash_tool="--with-crash" in sys.argv).run("stdio")
