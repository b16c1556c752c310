"""Helpers shared by the client-facing wire edges (``api/openai_compat.py``,
``api/anthropic_compat.py``): body parsing, Warden response headers, SSE framing."""
