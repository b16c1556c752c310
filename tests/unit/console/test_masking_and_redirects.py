"""What the console decides on its own: which arguments it masks before showing them,
where a sign-in may send the browser next, which unsafe requests carry the CSRF
token, and how money reads."""

from __future__ import annotations

import string
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from warden.console.login import _safe_next
from warden.console.masking import mask_secrets, pretty
from warden.console.web import check_csrf, usd
from warden.errors import Forbidden

_SECRET_NAMES = st.sampled_from(["api_key", "token", "Authorization", "password", "client_secret",
                                 "X-Api-Key", "credential", "session_cookie", "passwd"])
_VALUES = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40)


@given(name=_SECRET_NAMES, secret=_VALUES, nest=st.integers(0, 4))
def test_a_value_under_a_secret_name_never_shows_however_deep(name: str, secret: str, nest: int) -> None:
    args: object = {name: secret, "text": "visible"}
    for _ in range(nest):
        args = {"outer": [args]}
    shown = pretty(args)
    assert secret not in shown
    assert "visible" in shown and "***" in shown


def test_urls_lose_their_userinfo_and_query_values_and_plain_text_stays() -> None:
    masked = mask_secrets({"url": "https://bob:hunter2secret@api.example/v1?key=abcdef123456&x=1",
                           "note": "send to bob", "n": 3, "empty_token": ""})
    assert masked == {"url": "https://***@api.example/v1?key=***&x=***", "note": "send to bob", "n": 3,
                      "empty_token": ""}
    assert pretty("not json") == "not json"


@given(st.text(max_size=60))
def test_sign_in_sends_the_browser_only_to_a_console_path(target: str) -> None:
    where = _safe_next(target)
    assert where.startswith("/ui/") and not where.startswith("//") and "\\" not in where
    assert where in (target, "/ui/")


def test_money_reads_as_cents_or_as_fractions_of_a_cent() -> None:
    assert [usd(v) for v in (Decimal("12.345"), Decimal("0.000011"), 0, None)] == [
        "$12.35", "$0.000011", "$0.00", "unknown"]


def _request(headers: dict[str, str], body: bytes = b"") -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/ui/x", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


_TOKENS = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=0, max_size=50)


@given(expected=_TOKENS.filter(bool), sent=_TOKENS, how=st.sampled_from(["header", "form", "none"]))
async def test_an_unsafe_request_passes_only_with_the_sessions_own_token(expected: str, sent: str,
                                                                         how: str) -> None:
    if how == "header":
        request = _request({"x-csrf-token": sent})
    elif how == "form":
        request = _request({"content-type": "application/x-www-form-urlencoded"},
                           f"csrf_token={sent}&tier=intern".encode())
    else:
        request = _request({})
    if how != "none" and sent == expected:
        await check_csrf(request, expected)
        return
    with pytest.raises(Forbidden) as refused:
        await check_csrf(request, expected)
    assert refused.value.code == "csrf_failed" and refused.value.status == 403
