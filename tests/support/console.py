"""Console test helpers: a signed-in browser-like client on the real ASGI app, and
the CSRF token of its session (what a page's forms and htmx requests send)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.support.app import ADMIN_KEY, client_for
from warden.services import Services

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(html: str) -> str:
    """The CSRF token a rendered page carries (in its forms and its ``hx-headers``)."""
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign ``client`` in with ``key`` through the sign-in form; returns the session's CSRF token."""
    form = await client.get("/ui/login")
    reply = await client.post("/ui/login", data={"api_key": key, "csrf_token": csrf_in(form.text)})
    assert reply.status_code == 303, reply.text
    page = await client.get("/ui/")
    assert page.status_code == 200, page.text
    return csrf_in(page.text)


@asynccontextmanager
async def console_client(services: Services, key: str = ADMIN_KEY) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """(client, csrf token): a client signed in to the console with ``key`` (the admin's by default)."""
    async with client_for(services, key=None) as client:
        yield client, await sign_in(client, key)
