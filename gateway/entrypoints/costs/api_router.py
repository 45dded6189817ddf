"""``GET /v1/costs/summary``: spend, the all-teacher counterfactual and the savings.

Admin keys see everything (and may filter by ``key``); any other key sees its own costs only.
"""

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from gateway.auth.authenticator import caller
from gateway.auth.keys import ApiKey
from gateway.entrypoints.costs.serving import cost_summary
from gateway.state import GatewayState, get_state

router = APIRouter()


def visible_key(requested: str | None, key: ApiKey | None) -> str | None:
    """The api_key_id a caller may look at: its own unless it is an admin (or auth is off)."""
    if key is None or key.admin:
        return requested
    return key.id


@router.get("/v1/costs/summary", tags=["costs"])
async def summary(
    since: datetime | None = Query(default=None, description="ISO time, inclusive"),
    until: datetime | None = Query(default=None, description="ISO time, exclusive"),
    key: str | None = Query(default=None, description="api key id (admins only)"),
    caller_key: ApiKey | None = Depends(caller),
    state: GatewayState = Depends(get_state),
) -> dict:
    return await cost_summary(state, since, until, visible_key(key, caller_key))
