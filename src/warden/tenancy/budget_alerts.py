"""``budget.threshold`` events: a budget's spend in its current period reached 50, 80
or 100 % of its cap.

Checked by the webhook worker's tick, not on the request path: a request costs
nothing more, whether or not a webhook is configured, and a tick looks only at
workspaces that have a webhook for the event. Each threshold fires once per
budget and period, across instances and however the spend arrived (concurrent
requests, a jump over two thresholds at once): its event id names the budget,
the period and the threshold, and a delivery is unique per webhook and event id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from warden.state.base import StateStore, budget_period
from warden.store.db import Database
from warden.store.webhook_models import Webhook
from warden.tenancy.budgets import Budgets
from warden.tenancy.webhooks import emit

THRESHOLDS = (50, 80, 100)
EVENT = "budget.threshold"


def crossed(spent: Decimal, limit: Decimal) -> list[int]:
    """The thresholds (percent of ``limit``) that ``spent`` has reached."""
    return [t for t in THRESHOLDS if limit > 0 and spent * 100 >= limit * t]


def _usd(v: Decimal) -> str:
    return f"{v.normalize():f}"  # "100", not "1E+2" nor "100.000000000000"


class BudgetAlerts:
    def __init__(self, db: Database, budgets: Budgets, state: StateStore) -> None:
        self.db = db
        self.budgets = budgets
        self.state = state

    async def check(self, at: datetime | None = None) -> int:
        """Queue the events of every threshold reached and not yet queued; how many were queued."""
        at = at or datetime.now(UTC)
        async with self.db.session() as s:
            rows = (await s.execute(select(Webhook.workspace_id, Webhook.events)
                                    .where(Webhook.active.is_(True)))).all()
        workspaces = sorted({ws for ws, events in rows if EVENT in events or "*" in events})
        queued = 0
        for ws in workspaces:
            for b in await self.budgets.status(ws, self.state, at):
                if b.spent_usd is None:
                    continue  # the state store is away: next tick
                reached = crossed(b.spent_usd, b.limit_usd)
                if not reached:
                    continue
                suffix, _ = budget_period(b.period, at)  # type: ignore[arg-type]
                async with self.db.transaction() as s:
                    for t in reached:
                        queued += await emit(s, ws, EVENT, {
                            "budget_id": b.id, "scope": b.scope, "scope_id": b.scope_id, "period": b.period,
                            "period_key": suffix, "threshold": t, "limit_usd": _usd(b.limit_usd),
                            "spent_usd": _usd(b.spent_usd)}, event_id=f"budget:{b.id}:{suffix}:{t}")
        return queued
