"""Cost summary and time series: flush the ledger first so answers include every finished request."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from gateway.errors import GatewayError
from gateway.ledger import queries
from gateway.state import GatewayState

BUCKET_LENGTH = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise GatewayError("`since` must be before `until`.", param="since", code="invalid_value")


def _with_savings(figures: dict) -> dict:
    return {**figures, "savings": figures["teacher_cost"] - figures["cost"],
            "savings_pct": queries.savings_pct(figures["cost"], figures["teacher_cost"])}


async def cost_summary(state: GatewayState, since: datetime | None, until: datetime | None,
                       api_key_id: str | None = None) -> dict:
    since, until = queries.to_utc(since), queries.to_utc(until)
    _check_range(since, until)
    await state.ledger.flush()
    result = await asyncio.to_thread(queries.summary, state.engine, since, until, api_key_id)
    return {"object": "cost_summary", "teacher_tier": state.config.teacher_tier, **result}


async def cost_timeseries(state: GatewayState, since: datetime | None, until: datetime | None,
                          api_key_id: str | None, bucket: queries.Bucket) -> dict:
    """One entry per UTC day/hour that has requests: totals, savings, and each tier's figures."""
    since, until = queries.to_utc(since), queries.to_utc(until)
    _check_range(since, until)
    await state.ledger.flush()
    series = await asyncio.to_thread(queries.timeseries, state.engine, since, until, api_key_id, bucket)
    data = []
    for point in series:
        tiers = point["tiers"]
        total = {k: sum(f[k] for f in tiers.values())
                 for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "teacher_cost")}
        data.append({
            "start": point["start"].isoformat(),
            "end": (point["start"] + BUCKET_LENGTH[bucket]).isoformat(),
            **_with_savings(total),
            "tiers": {name: _with_savings(f) for name, f in sorted(tiers.items())},
        })
    return {
        "object": "cost_timeseries",
        "bucket": bucket,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "api_key_id": api_key_id,
        "teacher_tier": state.config.teacher_tier,
        "data": data,
    }

