"""The MCP gateway behind ``/mcp``: one MCP server, for an agent's key, that
aggregates the agent's upstream MCP servers (and, where configured, Warden's
built-in tools) and sends every call through the governance gate.

- ``pool.py``: upstream connections, shared between requests, started lazily
  and closed when idle or at shutdown.
- ``catalog.py``: which tools an agent sees under which names and risk levels.
- ``gateway.py``: list, call (decide, forward, report the outcome), resources
  and prompts (read-only, decided as level 1).

It sits between ``services`` (which builds it) and ``governance`` (whose gate it
calls); the HTTP transport is in ``api/mcp.py``.
"""
