"""The helpers every client wire format shares."""

from __future__ import annotations

import subprocess
import sys

import pytest

from warden.formats.common import inverse


def test_inverse_of_a_one_to_one_table() -> None:
    assert inverse({"a": 1, "b": 2}) == {1: "a", 2: "b"}


def test_inverse_needs_a_canonical_choice_where_several_mean_one() -> None:
    forward = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
    with pytest.raises(ValueError, match="choose one"):
        inverse(forward)
    assert inverse(forward, canonical={"stop": "end_turn"}) == {"stop": "end_turn", "length": "max_tokens"}
    assert inverse(forward, canonical={"stop": "stop_sequence"})["stop"] == "stop_sequence"
    assert inverse(forward, skip={"stop"}) == {"length": "max_tokens"}


def test_a_canonical_choice_must_read_back_to_its_value() -> None:
    with pytest.raises(ValueError, match="does not mean"):
        inverse({"end_turn": "stop", "max_tokens": "length"}, canonical={"stop": "max_tokens"})


def test_the_formats_import_no_web_framework() -> None:
    """The wire formats are pure code: the lean server process must not pull a
    web framework in through them."""
    code = ("import sys, warden.formats.common, warden.formats.openai, warden.formats.anthropic, "
            "warden.formats.sse; print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
