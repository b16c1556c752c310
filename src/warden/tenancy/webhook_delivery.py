"""The webhook worker of a serving instance: sends due deliveries, retries, gives up.

- **Claimed, never sent twice at once.** A due row (``pending``, or ``delivering``
  whose claim ran out: its instance died mid-send) is claimed by a conditional
  ``UPDATE … WHERE attempts = <seen>``, which also counts the attempt; across any
  number of instances one wins. The claim holds the row for the timeout plus a
  margin; an instance that dies mid-send leaves it to be claimed again then.
- **Signed** (``webhook_payloads.py``), POSTed with aiohttp under
  ``WARDEN_WEBHOOK_TIMEOUT``, to an address the policy allows (checked again
  here: the connection's resolver checks every address it is given, an IP
  literal is checked before the request).
- **Outcome.** 2xx: delivered. 410: the receiver says it is gone, given up at
  once. Anything else (another status, a timeout, a refused connection): tried
  again after an exponential backoff with jitter, until ``WARDEN_WEBHOOK_MAX_ATTEMPTS``.
  Each attempt is appended to the row's log (status, short redacted error);
  finished deliveries are kept 30 days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import delete, or_, select, update

from warden.gateway.providers.pool import get_client
from warden.logs import redact, register_secret
from warden.netpolicy import AddressPolicy, EgressError, ip_literal
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.webhook_models import Webhook, WebhookDelivery
from warden.tenancy.webhook_payloads import body as render_body
from warden.tenancy.webhook_payloads import headers as signed_headers
from warden.tenancy.webhooks import sealing_ids
from warden.vault.keyring import Keyring

log = logging.getLogger("warden.webhooks")

_BATCH = 20
_CLAIM_MARGIN_S = 30.0
_MAX_BACKOFF_S = 3600.0
_ERROR_CHARS = 200
KEEP_LOG_S = 30 * 86400.0  # finished deliveries are kept this long in the log
_PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_attempts: int = 8
    timeout_s: float = 10.0
    poll_s: float = 2.0
    backoff_s: float = 5.0  # the first retry's delay; doubled each time, with jitter


def backoff(attempts: int, base_s: float) -> float:
    """Seconds before attempt ``attempts + 1``: base * 2^(n-1), capped, times a jitter in [0.5, 1]."""
    return min(base_s * 2 ** max(attempts - 1, 0), _MAX_BACKOFF_S) * random.uniform(0.5, 1.0)


class WebhookWorker:
    def __init__(self, db: Database, keyring: Keyring, *, egress: AddressPolicy, config: DeliveryConfig,
                 also: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.db = db
        self.keyring = keyring
        self.egress = egress
        self.config = config
        self.also = also  # more work for every tick (the budget thresholds' check)
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="warden-webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _forever(self) -> None:
        while True:
            try:
                if self.also is not None:
                    await self.also()
                if time.monotonic() - self._pruned_at > _PRUNE_EVERY_S:
                    await self.prune()
                    self._pruned_at = time.monotonic()
                while await self.run_once() == _BATCH:
                    pass  # a backlog: keep going before sleeping
            except Exception:  # the database may be briefly away; try again next tick
                log.warning("webhook delivery tick failed", exc_info=True)
            await asyncio.sleep(self.config.poll_s)

    async def prune(self, keep_s: float = KEEP_LOG_S) -> int:
        """Drop finished deliveries older than ``keep_s`` (the log would grow without end)."""
        async with self.db.transaction() as s:
            gone = await s.execute(delete(WebhookDelivery).where(
                WebhookDelivery.status.in_(("delivered", "failed")),
                WebhookDelivery.created_at < utcnow() - timedelta(seconds=keep_s))
                .execution_options(synchronize_session=False))
        return gone.rowcount or 0

    async def run_once(self) -> int:
        """Claim the due deliveries and send them concurrently; how many were claimed."""
        claimed = await self._claim()
        await asyncio.gather(*(self._send(d) for d in claimed))
        return len(claimed)

    async def _claim(self) -> list[WebhookDelivery]:
        now = utcnow()
        async with self.db.session() as s:
            due = (await s.execute(select(WebhookDelivery.id, WebhookDelivery.attempts).where(
                or_(WebhookDelivery.status == "pending", WebhookDelivery.status == "delivering"),
                WebhookDelivery.next_attempt_at <= now).order_by(WebhookDelivery.next_attempt_at)
                .limit(_BATCH))).all()
        claimed: list[WebhookDelivery] = []
        hold = now + timedelta(seconds=self.config.timeout_s + _CLAIM_MARGIN_S)
        for delivery_id, attempts in due:
            async with self.db.transaction() as s:
                won = await s.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempts,
                    WebhookDelivery.status.in_(("pending", "delivering"))).values(
                    status="delivering", attempts=attempts + 1, next_attempt_at=hold)
                    .execution_options(synchronize_session=False))
                if won.rowcount == 1:
                    row = await s.get(WebhookDelivery, delivery_id, populate_existing=True)
                    if row is not None:
                        claimed.append(row)
        return claimed

    async def _send(self, d: WebhookDelivery) -> None:
        async with self.db.session() as s:
            hook = await s.get(Webhook, d.webhook_id)
        if hook is None or not hook.active:
            await self._finish(d, "failed", None, "the webhook was removed or disabled")
            return
        status: int | None = None
        error: str | None = None
        try:
            status = await self._post(hook, d)
        except TimeoutError:
            error = f"timed out after {self.config.timeout_s:g} s"
        except EgressError as exc:
            error = str(exc)
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if status is not None and 200 <= status < 300:
            await self._finish(d, "delivered", status, None)
        elif status == 410:
            await self._finish(d, "failed", status, "410 Gone: the receiver asked to stop")
        elif d.attempts >= self.config.max_attempts:
            await self._finish(d, "failed", status, error or f"HTTP {status}")
        else:
            await self._finish(d, "pending", status, error or f"HTTP {status}",
                               retry_in=backoff(d.attempts, self.config.backoff_s))

    async def _post(self, hook: Webhook, d: WebhookDelivery) -> int:
        host = urlsplit(hook.url).hostname or ""
        literal = ip_literal(host)
        if literal is not None:  # aiohttp connects to an IP literal without asking the resolver
            self.egress.check(host, [literal])
        secret = self.keyring.open((hook.secret_ciphertext, hook.secret_key_id), **sealing_ids(hook))
        register_secret(f"webhook:{hook.id}", secret)  # from now on redacted wherever it is echoed
        payload = render_body(d.payload, hook.format)
        sent_headers = signed_headers(secret, event_type=d.event_type, delivery_id=d.id,
                                      timestamp=str(int(time.time())), body=payload)
        session = get_client(self.egress).session
        try:
            async with session.post(hook.url, data=payload, headers=sent_headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)) as resp:
                await resp.content.read(1024)  # a little of the reply, so the connection can be reused
                return resp.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, OSError) and "refused:" in str(exc.os_error):
                raise EgressError(str(exc.os_error)) from None  # the resolver's policy check
            raise

    async def _finish(self, d: WebhookDelivery, status: str, http_status: int | None, error: str | None, *,
                      retry_in: float = 0.0) -> None:
        now = utcnow()
        short = redact(error)[:_ERROR_CHARS] if error else None
        entry = {"attempt": d.attempts, "at": now.isoformat().replace("+00:00", "Z"), "status": http_status,
                 "error": short}
        values: dict[str, Any] = {"status": status, "last_status": http_status, "last_error": short,
                                  "log": [*(d.log or []), entry], "next_attempt_at": now + timedelta(seconds=retry_in)}
        if status == "delivered":
            values["delivered_at"] = now
        async with self.db.transaction() as s:
            # Only while this attempt's claim holds (another instance may have taken it over since).
            await s.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == d.id, WebhookDelivery.attempts == d.attempts,
                WebhookDelivery.status == "delivering").values(**values)
                .execution_options(synchronize_session=False))
        level = logging.INFO if status in ("delivered", "pending") else logging.WARNING
        log.log(level, "webhook delivery %s (%s) attempt %d: %s%s", d.id, d.event_type, d.attempts,
                status, f" ({short})" if short else "")
