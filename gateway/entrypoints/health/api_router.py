"""``GET /health``: per-tier health; 200 while any tier serves, 503 when none does."""

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gateway.state import GatewayState, get_state

router = APIRouter()


@router.get("/health", tags=["ops"])
async def health(state: GatewayState = Depends(get_state)) -> JSONResponse:
    tiers = {tier.name: tier.health() for tier in state.tiers}
    ready = [name for name, h in tiers.items() if h["status"] == "ready"]
    status = "ok" if len(ready) == len(tiers) else "degraded" if ready else "unavailable"
    body = {"status": status, "tiers": tiers, "routing_policy": state.policy.name,
            "ledger_backlog": state.ledger.backlog}
    return JSONResponse(body, status_code=200 if ready else 503)
