"""The closed taxonomy of provider errors.

Each class says whether it is worth retrying on the same deployment
(``retryable``), worth moving to the next deployment (``failover``), or final.
Adapters classify from status codes and structured error bodies only.
``endpoint_level`` marks the failures that say the *host* cannot be reached at
all (refused, DNS, TLS, connect timeout): the gateway then takes the whole
endpoint (host + credential) out, not just the one model.
"""

from __future__ import annotations

from typing import Any

from warden.errors import WardenError
from warden.logs import redact


class ProviderError(WardenError):
    """An error from (or on the way to) an upstream provider."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = False
    failover = True
    endpoint_level = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        # Upstream text reaches members, stream events, logs and stored rows from
        # here: an upstream that echoes our key back must not hand it on.
        super().__init__(redact(message), code=code)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.attempts: int | None = None  # upstream attempts the request made (set by the gateway)

    def envelope(self, request_id: str | None = None) -> dict[str, Any]:
        body = super().envelope(request_id)
        if self.attempts is not None:
            body["error"]["attempts"] = self.attempts
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r}, {self.upstream_status!r}, {self.message!r})"


class RateLimited(ProviderError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"
    retryable = True
    failover = True


class Overloaded(ProviderError):
    status = 503
    type = "upstream_error"
    code = "upstream_overloaded"
    retryable = True
    failover = True


class Timeout(ProviderError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"
    retryable = True
    failover = True


class ConnectFailed(ProviderError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"
    retryable = True
    failover = True


class Unreachable(ConnectFailed):
    """No connection could be made to the host (refused, DNS, TLS)."""

    endpoint_level = True


class ConnectTimeout(Timeout):
    """The connection was not established within the connect timeout."""

    code = "upstream_connect_timeout"
    endpoint_level = True


class AuthFailed(ProviderError):
    """The provider refused our credential: another deployment may still work."""

    status = 502
    type = "upstream_error"
    code = "upstream_auth_failed"
    retryable = False
    failover = True


class BadRequest(ProviderError):
    """The request itself is wrong: every deployment would refuse it."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_bad_request"
    retryable = False
    failover = False


class ContextTooLong(ProviderError):
    """Too long for this model; a deployment with a larger window may take it."""

    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"
    retryable = False
    failover = True


class ContentFiltered(ProviderError):
    status = 400
    type = "invalid_request_error"
    code = "content_filtered"
    retryable = False
    failover = False


class UpstreamMalformed(ProviderError):
    status = 502
    type = "upstream_error"
    code = "upstream_malformed"
    retryable = True
    failover = True


class UpstreamTooLarge(ProviderError):
    """The reply (or one stream event) is over the size bound; reading stopped there."""

    status = 502
    type = "upstream_error"
    code = "upstream_reply_too_large"
    retryable = False
    failover = True


class AddressRefused(ProviderError):
    """The egress policy forbids the provider's address: no connection was made."""

    status = 502
    type = "upstream_error"
    code = "upstream_address_refused"
    retryable = False
    failover = True


ALL_PROVIDER_ERRORS: tuple[type[ProviderError], ...] = (
    RateLimited,
    Overloaded,
    Timeout,
    ConnectFailed,
    Unreachable,
    ConnectTimeout,
    AuthFailed,
    BadRequest,
    ContextTooLong,
    ContentFiltered,
    UpstreamMalformed,
    UpstreamTooLarge,
    AddressRefused,
)
