"""The one error hierarchy. Every error a client can see is a WardenError.

Each class knows its HTTP status, its envelope ``type`` and a stable ``code``.
Messages are written for the client: they never hold secrets, SQL or tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class WardenError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str = "internal error",
        *,
        code: str | None = None,
        status: int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = headers or {}

    def envelope(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        if request_id is not None:
            body["request_id"] = request_id
        return {"error": body}


class InvalidRequest(WardenError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(WardenError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(WardenError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(WardenError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(WardenError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(WardenError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


# Pydantic puts union member labels ("str", "list[Part]", "function-after[...]")
# into error locations; a client wants only the path of its own field (whose dict
# keys may hold "-", so only bracketed labels and the bare type names are dropped).
_TYPE_LABEL = re.compile(r"^(str|int|float|bool|none|dict|list|is-instance|literal)$|[\[\]<>]")


def field_path(loc: Sequence[Any], default: str = "body") -> str:
    """A pydantic error location as the client's field path, e.g. ``messages.0.content``."""
    parts = [str(p) for p in loc if isinstance(p, int) or not _TYPE_LABEL.search(str(p))]
    return ".".join(parts) or default


class ValidationFailed(WardenError):
    status = 422
    type = "invalid_request_error"
    code = "validation_error"

    @classmethod
    def of(cls, exc: ValidationError, *, where: str = "body", prefix: str = "",
           param: str | None = None) -> ValidationFailed:
        """The one conversion of a pydantic error: the first bad field, by path, never its value."""
        first = exc.errors(include_url=False, include_input=False)[0]
        path = field_path(first["loc"], where)
        message = first["msg"].removeprefix("Value error, ")
        return cls(f"{prefix}{path + ': ' if path else ''}{message}", param=param or path or None)


class RateLimitExceeded(WardenError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(WardenError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class ServiceUnavailable(WardenError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


# The range of each integer column type on every database we support: PostgreSQL's
# INTEGER is 32-bit, BIGINT (and every SQLite INTEGER) 64-bit. A number past its
# column's range is the client's mistake (422 naming the field), not the driver's
# OverflowError (500). Strict: JSON ``true`` is not 1, and ``5.5`` or ``"5"`` is not a count;
# ``5.0`` is 5, as JSON Schema's ``integer`` says (the OpenAPI document publishes that type).
# Each type carries both bounds: a field's own ``Field(ge=…)`` would be overridden by them.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _whole_float_as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


WholeNumber = BeforeValidator(_whole_float_as_int)  # after ``Field(strict=True, …)``, which it wraps
NonNegativeInt32 = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX), WholeNumber]
PositiveInt32 = Annotated[int, Field(strict=True, ge=1, le=INT32_MAX), WholeNumber]


class ConfigError(Exception):
    """Bad configuration at start-up: the message is one line naming the variable."""


def parse_input(model: type[Model], data: Model | Mapping[str, Any]) -> Model:
    """Validate service input (API, CLI or other callers): 422 naming the field, never the value."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed.of(exc) from None
