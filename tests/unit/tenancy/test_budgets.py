"""Budget specs as the API reads them: what the schema promises is what is accepted."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from warden.tenancy.budgets import BudgetSpec


def test_a_json_number_is_kept_to_the_picodollar() -> None:
    spec = BudgetSpec(scope="workspace", limit_usd=0.1, per_request_cap_usd="2.50")
    assert spec.limit_usd == Decimal("0.1")  # not 0.1000000000000000055511151231257827…
    assert spec.limit_usd.as_tuple().exponent == -12
    assert spec.per_request_cap_usd == Decimal("2.5")


def test_a_positive_cap_never_rounds_to_zero() -> None:
    assert BudgetSpec(scope="workspace", limit_usd=1, per_request_cap_usd=1e-30).per_request_cap_usd == \
        Decimal("0.000000000001")


@pytest.mark.parametrize("bad", ["", "-1", "abc", 1e12, "1000000000000", float("nan"), float("inf")])
def test_what_the_schema_excludes_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        BudgetSpec(scope="workspace", limit_usd=bad)


@pytest.mark.parametrize("zero", [0, "0", "0.000"])
def test_a_cap_of_zero_is_refused(zero: object) -> None:
    with pytest.raises(ValidationError):
        BudgetSpec(scope="workspace", limit_usd=1, per_request_cap_usd=zero)


@given(st.one_of(st.floats(min_value=0, max_value=1e12, exclude_max=True),
                 st.from_regex(r"^[0-9]{1,12}(\.[0-9]{1,40})?$", fullmatch=True)))
def test_every_amount_the_schema_allows_is_accepted_and_within_a_picodollar(value: float | str) -> None:
    spec = BudgetSpec(scope="workspace", limit_usd=value)
    written = Decimal(str(value))  # what a JSON body holds: the number's shortest text
    assert abs(spec.limit_usd - written) <= Decimal("0.0000000000005")
    assert spec.limit_usd.as_tuple().exponent == -12
