"""The one error envelope, as every test checks it."""

from __future__ import annotations

import httpx


def assert_envelope(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code
    assert set(err) >= {"type", "code", "message", "request_id"}
    assert err["request_id"] == resp.headers["x-request-id"]
    return err
