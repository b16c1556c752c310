"""Cross-instance cache invalidation: topics, the publisher services call after a
change, and the subscriber that drops this instance's cached copies.

Every service that caches (API keys, BYOK credentials, model groups, budgets)
drops its own entry at once and then publishes ``(topic, key)`` through the
shared state store; every instance (this one included) receives it and drops
its copy. With Redis that takes milliseconds; the caches' TTLs are the backstop
for a message lost while an instance was disconnected (the store then delivers
``FLUSH_ALL`` on reconnect, which drops everything).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from warden.state.base import FLUSH_ALL, StateStore, StateUnavailable

log = logging.getLogger("warden.tenancy.invalidation")

API_KEY = "api_key"  # key: the API key id
BYOK = "byok"  # key: workspace id
MODEL_GROUPS = "model_groups"  # key: workspace id
BUDGETS = "budgets"  # key: workspace id

Notify = Callable[[str, str], Awaitable[None]]


class _Forgets(Protocol):
    def forget(self, key_id: str | None = None) -> None: ...


class _Invalidates(Protocol):
    def invalidate(self, workspace_id: str | None = None) -> None: ...


def publisher(state: StateStore) -> Notify:
    """A ``notify(topic, key)`` that never fails the change it reports: the change
    is already committed, and the other instances' TTLs still bound the delay."""

    async def notify(topic: str, key: str) -> None:
        try:
            await state.publish(topic, key)
        except StateUnavailable:
            log.warning("could not broadcast %s change; other instances catch up by TTL", topic)

    return notify


def dispatcher(*, accounts: _Forgets, byok: _Invalidates, model_groups: _Invalidates,
               budgets: _Invalidates) -> Callable[[str, str], None]:
    """The subscriber: drop this instance's cached copy named by a message."""
    by_workspace = {BYOK: byok, MODEL_GROUPS: model_groups, BUDGETS: budgets}

    def on_message(topic: str, key: str) -> None:
        if topic == FLUSH_ALL:
            accounts.forget()
            for cache in by_workspace.values():
                cache.invalidate()
        elif topic == API_KEY:
            accounts.forget(key)
        elif topic in by_workspace:
            by_workspace[topic].invalidate(None if key == FLUSH_ALL else key)

    return on_message
