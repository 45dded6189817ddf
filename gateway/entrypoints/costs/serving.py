"""Cost summary and time series: flush the ledger first so answers include every finished request.

While the database is away the figures cannot be complete (rows are queued, reads fail), so
the answer is a retryable 503, never a 500 or a summary that silently misses rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from gateway.errors import GatewayError, database_unavailable
from gateway.ledger import queries
from gateway.ledger.db_errors import is_transient
from gateway.state import GatewayState

BUCKET_LENGTH = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
FLUSH_WAIT_S = 2.0  # how long a reader waits for queued rows before answering 503

T = TypeVar("T")


def _utc_range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """Both bounds in UTC, or a 400: an offset can push a valid date out of datetime's range
    (``0001-01-01T00:00:00+05:00`` is a year-0 instant)."""
    bounds = []
    for name, value in (("since", since), ("until", until)):
        try:
            bounds.append(queries.to_utc(value))
        except ValueError as exc:
            raise GatewayError(f"`{name}`: {exc}.", param=name, code="invalid_value") from None
    since_utc, until_utc = bounds
    if since_utc is not None and until_utc is not None and since_utc >= until_utc:
        raise GatewayError("`since` must be before `until`.", param="since", code="invalid_value")
    return since_utc, until_utc


async def _read(state: GatewayState, query: Callable[..., T], *args: object) -> T:
    """Flush the ledger, then run ``query`` on a worker thread; a database outage is a 503."""
    try:
        await asyncio.wait_for(state.ledger.flush(), FLUSH_WAIT_S)
    except TimeoutError:
        raise database_unavailable(f"{state.ledger.backlog} finished requests are not booked yet.") from None
    try:
        return await asyncio.to_thread(query, state.engine, *args)
    except Exception as exc:
        if is_transient(exc):
            raise database_unavailable("Costs cannot be read right now.") from None
        raise


def _with_savings(figures: dict) -> dict:
    return {**figures, "savings": figures["teacher_cost"] - figures["cost"],
            "savings_pct": queries.savings_pct(figures["cost"], figures["teacher_cost"])}


async def cost_summary(state: GatewayState, since: datetime | None, until: datetime | None,
                       api_key_id: str | None = None, group_by: queries.GroupBy = "tier") -> dict:
    since, until = _utc_range(since, until)
    result = await _read(state, queries.summary, since, until, api_key_id, group_by)
    return {"object": "cost_summary", "teacher_tier": state.config.teacher_tier, **result}


async def cost_timeseries(state: GatewayState, since: datetime | None, until: datetime | None,
                          api_key_id: str | None, bucket: queries.Bucket, group_by: queries.GroupBy = "tier") -> dict:
    """One entry per UTC day/hour that has requests: totals, savings, and each group's figures
    (``groups``; with the default grouping by tier also under ``tiers``, as before)."""
    since, until = _utc_range(since, until)
    series = await _read(state, queries.timeseries, since, until, api_key_id, bucket, group_by)
    data = []
    for point in series:
        tiers = point["tiers"]
        total = {k: sum(f[k] for f in tiers.values())
                 for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "teacher_cost")}
        groups = {name: _with_savings(f) for name, f in sorted(tiers.items())}
        data.append({
            "start": point["start"].isoformat(),
            "end": (point["start"] + BUCKET_LENGTH[bucket]).isoformat(),
            **_with_savings(total),
            **({"tiers": groups} if group_by == "tier" else {}),
            "groups": groups,
        })
    return {
        "object": "cost_timeseries",
        "bucket": bucket,
        "group_by": group_by,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "api_key_id": api_key_id,
        "teacher_tier": state.config.teacher_tier,
        "data": data,
    }

