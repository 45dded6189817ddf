"""``GET /v1/costs/summary`` and ``GET /v1/costs/timeseries``: spend, the all-teacher
counterfactual and the savings, for a period, in total or per UTC day/hour.

Admin keys see everything (and may filter by ``key``); any other key sees its own costs only.
"""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query

from gateway.entrypoints.dependencies import caller
from gateway.auth.keys import ApiKey
from gateway.entrypoints.costs.serving import cost_summary, cost_timeseries
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()

SINCE = Query(default=None, description="ISO time, inclusive; UTC unless it has an offset")
UNTIL = Query(default=None, description="ISO time, exclusive; UTC unless it has an offset")
KEY = Query(default=None, description="api key id (admins only; other keys always see their own)")
GROUP_BY = Query(default="tier", description="break the figures down by tier, the request's `user`, "
                 "its workload header, or the API key")


def visible_key(requested: str | None, key: ApiKey | None) -> str | None:
    """The api_key_id a caller may look at: its own unless it is an admin (or auth is off)."""
    if key is None or key.admin:
        return requested
    return key.id


@router.get("/v1/costs/summary", tags=["costs"])
async def summary(
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    key: str | None = KEY,
    group_by: Literal["tier", "user", "workload", "key"] = GROUP_BY,
    caller_key: ApiKey | None = Depends(caller),
    state: GatewayState = Depends(get_state),
) -> dict:
    return await cost_summary(state, since, until, visible_key(key, caller_key), group_by)


@router.get("/v1/costs/timeseries", tags=["costs"])
async def timeseries(
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    key: str | None = KEY,
    bucket: Literal["day", "hour"] = Query(default="day", description="UTC day or hour buckets"),
    group_by: Literal["tier", "user", "workload", "key"] = GROUP_BY,
    caller_key: ApiKey | None = Depends(caller),
    state: GatewayState = Depends(get_state),
) -> dict:
    return await cost_timeseries(state, since, until, visible_key(key, caller_key), bucket, group_by)
