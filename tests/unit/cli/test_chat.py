"""``cli/chat.py`` pieces that need no server: asking on a terminal, and short arguments."""

from __future__ import annotations

import io

import pytest

from warden.cli import chat


def test_without_a_terminal_nobody_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat.sys, "stderr", io.StringIO())  # not a terminal
    assert chat._tty_line("approve? ") is None


def test_with_a_terminal_that_cannot_be_opened_nobody_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def no_tty(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("no controlling terminal")

    monkeypatch.setattr(chat.sys, "stderr", Tty())
    monkeypatch.setattr("builtins.open", no_tty)
    assert chat._tty_line("approve? ") is None


def test_long_arguments_are_shortened() -> None:
    assert chat._short({"a": 1}) == '{"a": 1}'
    assert chat._short("x" * 500) == "x" * 160 + "…"
