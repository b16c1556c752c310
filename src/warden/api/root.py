"""``GET /``: the console when this server has one (``/ui``), else a small page with
the same welcome ``warden serve`` prints: where the admin key is, what to run next."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from warden import __version__

CONSOLE = "/ui"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Warden</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}}pre{{padding:.6rem}}</style></head>
<body><h1>Warden {version}</h1>
<p>This server is running. It is an LLM gateway (OpenAI and Anthropic APIs) and a server of
governed agents, on your own provider keys.</p>
<ol>
<li>Its admin key is in <code>admin.key</code> in its data directory (the start of
<code>warden serve</code> printed the path). The CLI finds it by itself; for curl and SDKs:
<pre>export WARDEN_KEY=$(cat "${{WARDEN_DATA_DIR:-$HOME/.local/share/warden}}/admin.key")</pre></li>
<li>Add a provider key: <pre>warden byok add openai --key -</pre></li>
<li>Ask something: <pre>warden chat -m auto "Hello"</pre>
or point any OpenAI SDK at <code>{base}/v1</code>.</li>
</ol>
<p><a href="/docs">API reference</a> · <a href="/openapi.json">OpenAPI schema</a> ·
<a href="/readyz">readiness</a></p></body></html>
"""


async def root(request: Request) -> Response:
    # ``app.state.console``: set by the console when it is installed (an included router
    # hides its routes' paths from ``app.routes``); a plain route at /ui counts too.
    if getattr(request.app.state, "console", None) or any(
            getattr(route, "path", None) == CONSOLE for route in request.app.routes):
        return RedirectResponse(CONSOLE, status_code=307)
    base = html.escape(str(request.base_url).rstrip("/"))
    return HTMLResponse(_PAGE.format(version=__version__, base=base))
