"""Structured JSON logs carrying the request id, with secrets redacted.

``redact`` is the one redactor. It removes two kinds of secret: the exact secrets
the process holds (every provider key it has opened or read from the
environment, the bootstrap admin key, the master keys: :func:`register_secret`),
whatever their shape, then anything shaped like a credential. An upstream that
echoes our key back ("Incorrect API key provided: <key>") is thereby cleaned on
every path that builds a message from upstream text: replies, stream errors,
logs, run events, audit rows.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

import orjson

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Anything shaped like a credential: bearer tokens, Warden keys, common provider
# keys, and any long unbroken token (an upstream may echo a key of any shape).
_SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"
    r"|\b(?:wk|sk|key)[-_](?:ant-|proj-)?[A-Za-z0-9._-]{6,}"
    r"|\bAIza[A-Za-z0-9_-]{6,}"
    r"|\b(?:gsk|xai|fw|csk)[-_][A-Za-z0-9_-]{12,}"
    r"|[A-Za-z0-9_-]{32,}"
)


# Shorter values are not registered: too short to tell from ordinary words
# (a local server's placeholder key "ollama"), and nothing a key guesser needs.
MIN_SECRET_CHARS = 8
_CANDIDATE = re.compile(r"\S{%d,}" % MIN_SECRET_CHARS)  # registered secrets hold no whitespace
_REDACTED = "[REDACTED]"


class SecretRegistry:
    """Exact secrets, found by their first ``MIN_SECRET_CHARS`` characters.

    A scan looks each window of every long enough token up in a dict, so its cost
    grows with the text, not with the number of secrets, and registering one is a
    dict update (no pattern to recompile). Each secret has an owner (``cred:<id>``,
    ``env:OPENAI_API_KEY``…) so a changed key replaces the old one and a removed
    credential's key can be forgotten. Updates swap immutable tuples, so a log
    record written from another thread sees either the old or the new entry.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._by_head: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owner: str, secret: str | None) -> None:
        secret = (secret or "").strip()
        if self._owners.get(owner) == secret:
            return
        self.forget(owner)
        if len(secret) < MIN_SECRET_CHARS or any(c.isspace() for c in secret):
            return
        self._owners[owner] = secret
        head = secret[:MIN_SECRET_CHARS]
        # Longest first, so a secret that extends another is removed whole.
        self._by_head[head] = tuple(sorted({*self._by_head.get(head, ()), secret}, key=len, reverse=True))

    def forget(self, owner: str) -> None:
        secret = self._owners.pop(owner, None)
        if secret is None or secret in self._owners.values():
            return
        head = secret[:MIN_SECRET_CHARS]
        rest = tuple(s for s in self._by_head.get(head, ()) if s != secret)
        if rest:
            self._by_head[head] = rest
        else:
            self._by_head.pop(head, None)

    def clear(self) -> None:
        self._owners.clear()
        self._by_head.clear()

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``[REDACTED]``."""
        by_head = self._by_head
        if not by_head:
            return text
        pieces: list[str] = []
        last = 0
        for m in _CANDIDATE.finditer(text):
            token, base = m.group(), m.start()
            # Where a secret's head appears (the common case: nowhere), in one comprehension.
            heads = [i for i in range(len(token) - MIN_SECRET_CHARS + 1)
                     if token[i:i + MIN_SECRET_CHARS] in by_head]
            skip_to = 0
            for i in heads:
                if i < skip_to:
                    continue  # inside a secret already removed
                hit = next((s for s in by_head[token[i:i + MIN_SECRET_CHARS]] if token.startswith(s, i)),
                           None)
                if hit:
                    pieces += (text[last:base + i], _REDACTED)
                    last = skip_to = base + i + len(hit)
                    skip_to -= base
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)


_secrets = SecretRegistry()


def register_secret(owner: str, secret: str | None) -> None:
    """Have :func:`redact` remove ``secret`` exactly, wherever it appears (``owner``
    names it: registering again under the same owner replaces it)."""
    _secrets.add(owner, secret)


def forget_secret(owner: str) -> None:
    _secrets.forget(owner)


def redact(text: str) -> str:
    """The one redactor: every registered secret, then every secret-shaped run,
    becomes ``[REDACTED]`` (exact secrets first, so a pattern never cuts one in two)."""
    return _SECRET.sub(lambda m: (m.group(1) or "") + _REDACTED, _secrets.scrub(text))


# Loggers whose records are built only from route templates, methods and numbers
# (request data only once redacted, in api/middleware.py), so redacting them again
# would cost time and find nothing;
# audit checkpoints hold only hashes and signatures, which the patterns would blank.
_NOTHING_TO_REDACT = frozenset({"warden.access", "warden.audit.checkpoint"})


class RedactingFilter(logging.Filter):
    """Redacts the rendered message and string args of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in _NOTHING_TO_REDACT:
            record.request_id = request_id_var.get()
            return True
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        record.request_id = request_id_var.get()
        return True


class _RedactingJsonFormatter(JsonFormatter):
    _second: int | None = None
    _second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        """``formatTime``'s text, its seconds part rendered once a second (strftime and
        localtime are most of a line's cost)."""
        if self.datefmt:
            return self.formatTime(record, self.datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._second_text, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        if record.name in _NOTHING_TO_REDACT and not record.exc_info and not record.stack_info:
            # One line per request: the same JSON the generic path writes for these
            # records (fixed fields, no extras), at a fraction of its cost.
            line = {"ts": self._time(record), "level": record.levelname,
                    "logger": record.name, "message": record.getMessage(),
                    "request_id": getattr(record, "request_id", None)}
            line.update(getattr(record, "access", None) or {})  # the access log's own fields
            # orjson: a tenth of json.dumps' time; it writes UTF-8, so a line that is not
            # ASCII takes json.dumps, whose escapes any stream encoding can carry.
            text = orjson.dumps(line, default=str).decode()
            return text if text.isascii() else json.dumps(line, default=str)
        text = super().format(record)
        return text if record.name in _NOTHING_TO_REDACT and not record.exc_info else redact(text)


def make_handler(stream=None) -> logging.Handler:  # noqa: ANN001
    """The server's log handler: JSON lines on ``stream`` (stderr), every record redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_RedactingJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
    ))
    return handler


def configure_logging(level: str = "info", stream=None) -> None:  # noqa: ANN001
    handler = make_handler(stream)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_warden", False):
            root.removeHandler(h)
    handler._warden = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # we log requests ourselves
