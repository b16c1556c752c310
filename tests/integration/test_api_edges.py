"""What every route shares: the error envelope with its request id (also for a
bug underneath a route), body validation, and bounded metrics labels."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.services import Services


async def test_odd_methods_do_not_grow_metrics(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.request(f"X{i:05d}", "/healthz")
    text = (await client.get("/metrics")).text
    assert 'method="X00001"' not in text
    assert 'warden_http_requests_total{method="OTHER",route="/healthz",status="405"} 5.0' in text


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_non_positive_max_tokens_is_422(client: httpx.AsyncClient, field: str) -> None:
    r = await client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "x"}], field: -5})
    assert assert_envelope(r, 422, "validation_error")["param"] == field


async def test_a_bug_still_answers_in_the_envelope_with_the_request_id(services: Services) -> None:
    async with client_for(services) as c:
        # A broken dependency underneath a route: its error must not reach the client.
        services.model_groups.list = None  # type: ignore[assignment,method-assign]
        r = await c.get("/api/model-groups", headers={"x-request-id": "req-bug-1"})
    err = assert_envelope(r, 500, "internal_error")
    assert err["request_id"] == "req-bug-1" == r.headers["x-request-id"]
    assert "NoneType" not in r.text and "Traceback" not in r.text
