"""The request's cost-guard options in ``{"warden": {...}}``."""

from __future__ import annotations

import math

import pytest

from warden.errors import InvalidRequest
from warden.gateway.context import RouteOptions


@pytest.mark.parametrize(("raw", "factor"), [
    ({}, None),
    ({"prefer": "cost"}, None),
    ({"max_fallback_cost_factor": 10}, 10.0),
    ({"max_fallback_cost_factor": 1.5}, 1.5),
    ({"allow_pricier_fallback": True}, math.inf),
    ({"allow_pricier_fallback": False, "max_fallback_cost_factor": 2}, 2.0),
    ({"allow_pricier_fallback": True, "max_fallback_cost_factor": 2}, math.inf),
])
def test_cost_factor_from_the_request(raw, factor) -> None:
    assert RouteOptions.from_dict(raw).max_fallback_cost_factor == factor


@pytest.mark.parametrize(("raw", "param"), [
    ({"max_fallback_cost_factor": 0.5}, "warden.max_fallback_cost_factor"),
    ({"max_fallback_cost_factor": "4"}, "warden.max_fallback_cost_factor"),
    ({"max_fallback_cost_factor": True}, "warden.max_fallback_cost_factor"),
    ({"max_fallback_cost_factor": float("nan")}, "warden.max_fallback_cost_factor"),
    ({"allow_pricier_fallback": "yes"}, "warden.allow_pricier_fallback"),
])
def test_bad_cost_factor_is_a_400_naming_the_field(raw, param) -> None:
    with pytest.raises(InvalidRequest) as err:
        RouteOptions.from_dict({"prefer": "value", **raw})
    assert err.value.param == param
