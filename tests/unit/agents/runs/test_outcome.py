"""A run's error body and its totals over steps."""

from __future__ import annotations

from decimal import Decimal

from warden.agents.runs import error_body
from warden.agents.runs.outcome import sum_steps
from warden.errors import InvalidRequest, NotFound, WardenError


def test_error_body_is_the_envelope_with_the_status_and_without_param() -> None:
    exc = InvalidRequest("unknown model 'x'", code="model_not_found", param="model")
    envelope = exc.envelope()["error"]
    assert error_body(exc) == {"type": envelope["type"], "code": envelope["code"],
                               "message": envelope["message"], "status": 400}
    assert error_body(NotFound("no run")) == {"type": "not_found_error", "code": "not_found",
                                              "message": "no run", "status": 404}


def test_error_body_never_tells_a_foreign_exception() -> None:
    body = error_body(RuntimeError("password=hunter2"))
    assert body == {"type": "server_error", "code": "internal_error",
                    "message": "internal error during the run", "status": 500}
    abandoned = error_body(WardenError("the server stopped", code="run_abandoned"))
    assert (abandoned["type"], abandoned["code"], abandoned["status"]) == ("server_error", "run_abandoned", 500)


def _step(cost: str | None, tokens: int) -> dict:
    return {"usage": {"input_tokens": tokens, "output_tokens": 1, "cache_read_tokens": 0,
                      "cache_write_tokens": 0, "reasoning_tokens": 0}, "cost_usd": cost}


def test_sum_steps_knows_the_cost_only_when_every_step_does() -> None:
    usage, cost = sum_steps([_step("0.001", 10), _step("0.002", 5)])
    assert (usage.input_tokens, usage.output_tokens, cost) == (15, 2, Decimal("0.003"))
    assert sum_steps([_step("0.001", 10), _step(None, 5)])[1] is None
    assert sum_steps([])[1] is None
