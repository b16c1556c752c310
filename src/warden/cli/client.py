"""The CLI as a client of a running server: finding it, the key it uses, one HTTP call.

- The server: ``WARDEN_URL`` when set (it must answer), else the address a
  ``warden serve`` of this data directory wrote to ``<data dir>/server.json``
  (``warden/server.py``), if something answers there.
- The key: ``WARDEN_KEY``, else ``WARDEN_ADMIN_KEY``, else ``<data dir>/admin.key``.
- A failed call becomes one line naming the server's error and, where there is
  one, the next step; nothing is retried.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from warden.config import Settings

TIMEOUT = httpx.Timeout(30.0, connect=3.0)
_HINTS = {
    "invalid_api_key": "export WARDEN_KEY=<an admin key of this server> (the server wrote its first one "
                       "to admin.key in its data directory)",
    "forbidden": "this needs an admin key: export WARDEN_KEY=<an admin key>",
}


class Refused(Exception):
    """A call that cannot go on; its text is the one line the command prints."""


def fail(message: str) -> None:
    raise Refused(message)


@dataclass(frozen=True)
class Server:
    url: str
    source: str  # "WARDEN_URL" or the address file's path


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def find_server(settings: Settings) -> Server | None:
    """The server this command talks to, or None when none runs for this data directory."""
    url = os.environ.get("WARDEN_URL", "").strip().rstrip("/")
    if url:
        if not _answers(url):
            fail(f"WARDEN_URL={url}: no Warden answers there; start it (warden serve) or unset WARDEN_URL")
        return Server(url, "WARDEN_URL")
    path = settings.address_file
    try:
        url = str(json.loads(path.read_text())["url"]).rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Server(url, str(path)) if _answers(url) else None


def find_key(settings: Settings) -> str:
    key = os.environ.get("WARDEN_KEY", "").strip() or settings.admin_key
    if key:
        return key
    path = settings.data_dir / "admin.key"
    try:
        key = path.read_text().strip()
    except OSError:
        key = ""
    if not key:
        fail(f"no API key: export WARDEN_KEY=<an admin key> (none in WARDEN_KEY, WARDEN_ADMIN_KEY or {path})")
    return key


class Client:
    """One server, one key; every method returns the decoded JSON body (None for 204)."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=TIMEOUT,
                                 headers={"authorization": f"Bearer {key}"})

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=json_body,
                                  params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            fail(f"{self.server.url}: {exc.__class__.__name__}: {exc}")
        check(r)
        return None if r.status_code == 204 or not r.content else r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json_body=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json_body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """SSE events (``data:`` JSON objects) of a streamed reply, as they arrive."""
        try:
            with self.http.stream(method, path, json=body,
                                  timeout=httpx.Timeout(None, connect=3.0)) as r:
                if r.status_code >= 400:
                    r.read()
                    check(r)
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        data = line[5:].strip()
                        if data and data != "[DONE]":
                            yield json.loads(data)
        except httpx.HTTPError as exc:
            fail(f"{self.server.url}: {exc.__class__.__name__}: {exc}")


def check(r: httpx.Response) -> None:
    """An error reply becomes one line: the server's message, then the next step if known."""
    if r.status_code < 400:
        return
    try:
        error = r.json()["error"]
        message, code = str(error.get("message")), str(error.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        message, code = r.text[:200] or r.reason_phrase, ""
    hint = _HINTS.get(code)
    fail(f"{message} ({r.status_code} {code})" + (f"; {hint}" if hint else ""))
