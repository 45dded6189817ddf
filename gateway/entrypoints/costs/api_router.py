"""``GET /v1/costs/summary``: spend, the all-teacher counterfactual and the savings."""

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from gateway.entrypoints.costs.serving import cost_summary
from gateway.state import GatewayState, get_state

router = APIRouter()


@router.get("/v1/costs/summary", tags=["costs"])
async def summary(
    since: datetime | None = Query(default=None, description="ISO time, inclusive"),
    until: datetime | None = Query(default=None, description="ISO time, exclusive"),
    state: GatewayState = Depends(get_state),
) -> dict:
    return await cost_summary(state, since, until)
