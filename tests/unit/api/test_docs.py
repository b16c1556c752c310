"""The OpenAPI document's assembly (api/docs.py)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from warden.api.docs import _body_schema


def test_two_request_models_of_one_name_cannot_share_a_schema_entry() -> None:
    """Once, Responses' ``_Part`` silently replaced chat completions' in /openapi.json."""
    def model(field: type) -> type[BaseModel]:
        return type("_Part", (BaseModel,), {"__annotations__": {"x": field}})

    components: dict = {}
    _body_schema(model(int), components)
    _body_schema(model(int), components)  # the same shape again: fine
    with pytest.raises(RuntimeError, match="'_Part'"):
        _body_schema(model(str), components)
