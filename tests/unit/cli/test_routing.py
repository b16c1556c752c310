"""``warden route explain``'s sentence about the cost guard."""

from __future__ import annotations

from warden.cli.routing import guard_line


def test_guard_line() -> None:
    assert guard_line(None) == ""
    assert guard_line({"max_factor": None, "applied": False}) == (
        "cost guard: lifted by the request (any fallback may be used)")
    assert "no known price" in guard_line({"max_factor": 4.0, "applied": False, "reference": "c:m"})
    base = {"max_factor": 4.0, "applied": True, "reference": "c:m", "reference_cost_usd": "0.00001"}
    assert guard_line({**base, "excluded": 0}) == (
        "cost guard: fallbacks up to 4x the first choice c:m (about $0.00001 for this request)")
    assert guard_line({**base, "excluded": 2}).endswith("; 2 pricier step(s) held back")
