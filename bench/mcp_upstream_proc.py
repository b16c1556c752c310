"""A loopback MCP server (streamable HTTP, the official SDK) for ``bench/mcp_gateway.py``:
``echo`` (read-only: allowed at once) and ``add`` (a plain tool: level 3, held for an
intern agent)."""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations


def build() -> MCPServer:
    server = MCPServer("bench-upstream")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    return server


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.mcp_upstream_proc")
    p.add_argument("--port", type=int, required=True)
    port = p.parse_args().port
    uvicorn.run(build().streamable_http_app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, loop="asyncio")


if __name__ == "__main__":
    main()
