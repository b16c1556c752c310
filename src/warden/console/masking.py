"""Tool arguments as the console shows them, masked by the one home of that rule
(``agents.secrets_mask.mask_arguments``)."""

from __future__ import annotations

from typing import Any

import orjson

from warden.agents.secrets_mask import mask_arguments as mask_secrets

__all__ = ["mask_secrets", "pretty"]


def pretty(value: Any) -> str:
    """Masked arguments as indented JSON (a string that is not JSON stays as it is)."""
    masked = mask_secrets(value)
    if isinstance(masked, str):
        return masked
    return orjson.dumps(masked, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
