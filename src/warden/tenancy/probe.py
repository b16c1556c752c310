"""The key test: one authenticated call to the provider with a credential's key.

The provider's model list is its cheapest authenticated endpoint; the outcome
says whether the key works, never the key (even a provider that echoes it back).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel

from warden.gateway.errors import AddressRefused, AuthFailed, ConnectFailed, ProviderError, Timeout
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import Timeouts
from warden.logs import redact
from warden.tenancy.credential_cache import ResolvedCredential


class TestResult(BaseModel):
    __test__ = False  # not a pytest class

    ok: bool
    status: Literal["ok", "auth_failed", "unreachable", "refused", "error"]
    latency_ms: float
    detail: str
    models_count: int | None = None


TEST_TIMEOUTS = Timeouts(connect=5.0, first_byte=10.0, stream_gap=10.0, total=15.0)


async def probe(cred: ResolvedCredential, timeouts: Timeouts = TEST_TIMEOUTS) -> TestResult:
    """Call the provider's model list (its cheapest authenticated endpoint) with the key."""
    started = time.perf_counter()
    status: Literal["ok", "auth_failed", "unreachable", "refused", "error"]
    count = None
    try:
        models = await get_adapter(cred.wire).list_models(cred.endpoint("", timeouts))
    except AuthFailed as exc:
        status, detail = "auth_failed", exc.message
    except AddressRefused as exc:  # the address policy, at connect time (DNS changed since the check)
        status, detail = "refused", exc.message
    except (ConnectFailed, Timeout) as exc:
        status, detail = "unreachable", exc.message
    except ProviderError as exc:
        status, detail = "error", exc.message
    except Exception as exc:
        status, detail = "error", f"{cred.provider}: {type(exc).__name__}"
    else:
        status, count = "ok", len(models)
        detail = f"{cred.provider}: key accepted, {count} models listed"
    latency = round((time.perf_counter() - started) * 1000, 1)
    return TestResult(ok=status == "ok", status=status, latency_ms=latency,
                      detail=_scrub(detail, cred.api_key), models_count=count)


def _scrub(text: str, secret: str | None) -> str:
    """Redact key-shaped text, and the key itself whatever its shape (a second guard)."""
    if secret:
        text = text.replace(secret, "[REDACTED]")
    return redact(text)[:500]
