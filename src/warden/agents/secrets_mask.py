"""What of an MCP server definition is shown masked, and how a masked value sent back
is read as "unchanged".

An agent view is seen by every member of the workspace, while a server's
definition may carry tokens: header and env values (``Authorization``, an API
key), a URL's userinfo (``https://user:token@host``) and query values
(``?api_key=…``), and stdio args (``--token sk-…``, ``API_KEY=…``). Views show
their shape and mask the values:

- header and env values: ``…`` and the last four characters of a long value,
  ``[set]`` for a short one;
- a URL's userinfo and each query value: ``***`` (URL-safe, unlike the above);
- a stdio arg after a flag whose name holds token/key/secret/password (``--api-key X``),
  and the value of any ``KEY=VALUE`` arg (``--token=X``, ``API_KEY=X``): ``***``.

A client that sends a view back sends those placeholders; for a server of the
same name each one is replaced by the stored value it stands for. A placeholder
with no stored value behind it is refused, never stored as the secret.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from warden.errors import ValidationFailed
from warden.logs import redact

# MCP server fields whose values may carry tokens (an Authorization header, an API key in env).
SECRET_FIELDS = ("headers", "env")
# What a masked header or env value looks like when a client sends a view back.
_MASKED = re.compile(r"^(\[set\]|….{0,4})$", re.DOTALL)
# The placeholder for URL parts and args.
MASK = "***"
_SECRET_FLAG = re.compile(r"token|key|secret|passw(or)?d|credential|auth", re.IGNORECASE)


def mask_value(value: Any) -> Any:
    """``…`` and the last four characters of a long secret; ``[set]`` for a short one
    (four characters of it would give too much away). Empty stays empty."""
    if not isinstance(value, str) or not value:
        return value
    return f"…{value[-4:]}" if len(value) >= 12 else "[set]"


# --- URLs ------------------------------------------------------------------------------


def mask_url(url: Any) -> Any:
    """The URL with its userinfo and every query value replaced by ``***``."""
    if not isinstance(url, str) or not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_mask_query_part(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_query_part(part: str) -> str:
    name, eq, value = part.partition("=")
    return f"{name}={MASK}" if eq and value else part


def _unmask_url(sent: str, stored: str | None, where: str) -> str:
    """``sent`` with each ``***`` put back from ``stored`` (userinfo; query values by name)."""
    parts = urlsplit(sent)
    old = urlsplit(stored) if stored else None
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and userinfo == MASK:
        if old is None or "@" not in old.netloc:
            raise _masked_without_secret(f"{where}.url", "userinfo")
        netloc = f"{old.netloc.rpartition('@')[0]}@{hostport}"
    old_values: dict[str, list[str]] = {}
    for part in (old.query.split("&") if old and old.query else []):
        name, _, value = part.partition("=")
        old_values.setdefault(name, []).append(value)
    query_parts = []
    for part in parts.query.split("&") if parts.query else []:
        name, eq, value = part.partition("=")
        if eq and value == MASK:
            candidates = old_values.get(name)
            if not candidates:
                raise _masked_without_secret(f"{where}.url", f"query value '{name[:40]}'")
            part = f"{name}={candidates.pop(0)}"
        query_parts.append(part)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(query_parts), parts.fragment))


# --- stdio args ---------------------------------------------------------------------------


def mask_args(args: Any) -> Any:
    """Args with secret-looking values replaced by ``***`` (see the module docstring)."""
    if not isinstance(args, list):
        return args
    out: list[Any] = []
    after_flag = False
    for arg in args:
        if not isinstance(arg, str):
            out.append(arg)
            after_flag = False
            continue
        if after_flag and arg:
            out.append(MASK)
        elif "=" in arg and arg.partition("=")[2]:
            out.append(f"{arg.partition('=')[0]}={MASK}")
        else:
            out.append(arg)
        after_flag = arg.startswith("-") and "=" not in arg and bool(_SECRET_FLAG.search(arg))
    return out


def _unmask_args(sent: list[Any], stored: list[Any], where: str) -> list[Any]:
    """Each arg that is (or ends in) ``***`` comes back from the stored arg at the same
    position, when masking that one gives the same text."""
    masked_stored = mask_args(stored)
    out = []
    for i, arg in enumerate(sent):
        if isinstance(arg, str) and (arg == MASK or arg.endswith(f"={MASK}")):
            if i >= len(stored) or masked_stored[i] != arg:
                raise _masked_without_secret(f"{where}.args[{i}]", "arg")
            arg = stored[i]
        out.append(arg)
    return out


# --- whole server lists ---------------------------------------------------------------------


def redacted_servers(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server definitions as a view shows them: names and shapes kept, secrets masked."""
    out = []
    for server in servers:
        shown = dict(server)
        for key in SECRET_FIELDS:
            if isinstance(shown.get(key), dict):
                shown[key] = {name: mask_value(value) for name, value in shown[key].items()}
        if "url" in shown:
            shown["url"] = mask_url(shown["url"])
        if "args" in shown:
            shown["args"] = mask_args(shown["args"])
        out.append(shown)
    return out


def keep_masked_secrets(sent: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``sent`` with every masked placeholder replaced by the stored secret of the same
    server (by name) it stands for; ValidationFailed for a placeholder with none behind it."""
    stored_by_name = {s.get("name"): s for s in stored if isinstance(s, dict)}
    out = []
    for i, server in enumerate(sent):
        if not isinstance(server, dict):
            out.append(server)
            continue
        old = stored_by_name.get(server.get("name")) or {}
        merged = dict(server)
        for field in SECRET_FIELDS:
            values = server.get(field)
            if not isinstance(values, dict):
                continue
            previous = old.get(field) if isinstance(old.get(field), dict) else {}
            kept = {}
            for name, value in values.items():
                if isinstance(value, str) and _MASKED.match(value):
                    if name not in previous:
                        raise _masked_without_secret(f"mcp_servers[{i}].{field}.{name}", f"'{value}'")
                    value = previous[name]
                kept[name] = value
            merged[field] = kept
        if isinstance(server.get("url"), str) and MASK in server["url"]:
            old_url = old.get("url") if isinstance(old.get("url"), str) else None
            merged["url"] = _unmask_url(server["url"], old_url, f"mcp_servers[{i}]")
        if isinstance(server.get("args"), list):
            old_args = old.get("args") if isinstance(old.get("args"), list) else []
            merged["args"] = _unmask_args(server["args"], old_args, f"mcp_servers[{i}]")
        out.append(merged)
    return out


def _masked_without_secret(where: str, what: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {what} is a masked value and no secret is stored for it on a "
                            "server of this name; send the real value", param="mcp_servers")


# --- a tool call's arguments -------------------------------------------------------------

_SECRET_NAME = re.compile(r"token|key|secret|passw(or)?d|credential|auth|cookie", re.IGNORECASE)
_SECRET_IN_TEXT = re.compile(r"(?i)(bearer\s+|(?:token|key|secret|password|passwd)=)[^\s&'\"]+")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_DEPTH = 20


def mask_arguments(value: Any, _depth: int = 0) -> Any:
    """A tool call's arguments as a human sees them (approvals, the console, stored
    external approvals): a value under a secret-looking name, a URL's userinfo and
    query values, ``Bearer …`` / ``token=…`` inside text are ``***``, and every string
    passes the one redactor (any secret the process holds)."""
    if _depth > _DEPTH:
        return MASK
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _SECRET_NAME.search(k) and v not in (None, "")
                    else mask_arguments(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_arguments(v, _depth + 1) for v in value]
    if isinstance(value, str):
        text = _SECRET_IN_TEXT.sub(lambda m: m.group(1) + MASK, redact(value))
        if not _URL.match(text):
            return text
        try:
            return mask_url(text)
        except ValueError:  # not a URL after all (a bad IPv6 host): hide it whole
            return MASK
    return value
