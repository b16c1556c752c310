"""The overview's time series: requests, errors and spend per hour, read from the
spend ledger (the rows ``/api/usage`` sums), as the JSON ``static/console.js`` draws.

Buckets are made by the database (one row per hour, not per request); hours with
no request are filled with zeros so every series has one value per hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select

from warden.store.db import Database
from warden.store.models import SpendRow


def _hour_of(db: Database) -> Any:
    if db.is_sqlite:
        return func.strftime("%Y-%m-%dT%H", SpendRow.ts)
    return func.to_char(func.date_trunc("hour", func.timezone("UTC", SpendRow.ts)), 'YYYY-MM-DD"T"HH24')


async def hourly(db: Database, workspace_id: str, *, hours: int = 24,
                 now: datetime | None = None) -> dict[str, Any]:
    """The last ``hours`` hours up to the current one: x (unix seconds of each hour's start),
    and the series requests, errors, cost_usd."""
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    hour = _hour_of(db)
    q = (select(hour.label("h"), func.count(),
                func.sum(case((SpendRow.status == "ok", 0), else_=1)),
                func.coalesce(func.sum(SpendRow.cost_usd), 0))
         .where(SpendRow.workspace_id == workspace_id, SpendRow.ts >= start)
         .group_by(hour))
    async with db.session() as s:
        rows = {str(h): (n, errs or 0, float(cost or 0)) for h, n, errs, cost in (await s.execute(q)).all()}
    stamps = [start + timedelta(hours=i) for i in range(hours)]
    cells = [rows.get(t.strftime("%Y-%m-%dT%H"), (0, 0, 0.0)) for t in stamps]
    return {
        "x": [int(t.timestamp()) for t in stamps],
        "series": [
            {"label": "requests", "values": [c[0] for c in cells]},
            {"label": "errors", "values": [c[1] for c in cells]},
        ],
        "cost": {"label": "spend (USD)", "values": [round(c[2], 6) for c in cells]},
    }
