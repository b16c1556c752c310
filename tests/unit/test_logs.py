"""The exact-secret registry behind ``logs.redact`` (issue 13, item 2): every secret
the process holds is removed by value, whatever its shape."""

from __future__ import annotations

import io
import logging
import string
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden import logs
from warden.logs import MIN_SECRET_CHARS, SecretRegistry, configure_logging, redact, register_secret

# Key-like characters; "[" and "]" are left out so no secret can be spelt by the marker itself.
KEY_CHARS = string.ascii_letters + string.digits + "-_.~+/=:!@#$%^&*"
secret_text = st.text(KEY_CHARS, min_size=MIN_SECRET_CHARS, max_size=60)


@pytest.fixture(autouse=True)
def _own_registry() -> Iterator[None]:
    logs._secrets.clear()
    yield
    logs._secrets.clear()


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(secret_text, min_size=1, max_size=6), around=st.lists(st.text(), min_size=2, max_size=8),
       data=st.data())
def test_no_registered_secret_survives_redaction(secrets: list[str], around: list[str], data) -> None:  # noqa: ANN001
    """The invariant: whatever text surrounds them, however they overlap or extend each
    other, no registered secret is left whole in what ``redact`` returns."""
    registry = SecretRegistry()
    for i, s in enumerate(secrets):
        registry.add(f"owner{i}", s)
    placed = [data.draw(st.sampled_from(secrets)) for _ in around[1:]]
    text = around[0] + "".join(s + a for s, a in zip(placed, around[1:], strict=True))
    scrubbed = registry.scrub(text)
    for s in secrets:
        assert s not in scrubbed
    if not any(s in text for s in secrets):
        assert scrubbed == text  # nothing to remove: the text comes back as it was


def test_owners_replace_and_forget() -> None:
    registry = SecretRegistry()
    registry.add("cred:1", "first-plain-value")
    assert registry.scrub("x first-plain-value y") == "x [REDACTED] y"
    registry.add("cred:1", "second-plain-value")  # the credential's key changed
    assert registry.scrub("first-plain-value") == "first-plain-value"
    assert registry.scrub("second-plain-value") == "[REDACTED]"
    registry.add("cred:2", "second-plain-value")  # two owners of one value
    registry.forget("cred:1")
    assert registry.scrub("second-plain-value") == "[REDACTED]"  # cred:2 still holds it
    registry.forget("cred:2")
    assert registry.scrub("second-plain-value") == "second-plain-value" and len(registry) == 0


def test_short_or_spaced_values_are_not_registered() -> None:
    """A local server's placeholder key ("ollama") would blank out ordinary words."""
    registry = SecretRegistry()
    registry.add("env:OLLAMA_API_KEY", "ollama")
    registry.add("x", "has a space")
    registry.add("y", None)
    assert len(registry) == 0 and registry.scrub("ollama has a space") == "ollama has a space"


def test_redact_removes_a_registered_key_before_the_patterns() -> None:
    register_secret("cred:a", "abc123PLAINKEYnopattern")
    register_secret("cred:b", "zz-sk-proj-looks-like-a-pattern-inside")
    out = redact("Incorrect API key provided: abc123PLAINKEYnopattern; also "
                 "zz-sk-proj-looks-like-a-pattern-inside and Bearer abc123PLAINKEYnopattern")
    assert "PLAINKEY" not in out and "zz-" not in out and "inside" not in out
    assert out.count("[REDACTED]") == 3


def test_log_lines_lose_registered_keys() -> None:
    register_secret("env:OPENAI_API_KEY", "plainenvkey42")
    buf = io.StringIO()
    configure_logging("debug", stream=buf)
    logging.getLogger("warden.test").warning("upstream said %s", "bad key plainenvkey42!")
    try:
        raise ValueError("boom plainenvkey42")
    except ValueError:
        logging.getLogger("warden.test").exception("failed")
    assert "plainenvkey42" not in buf.getvalue() and buf.getvalue().count("[REDACTED]") >= 2
