"""``GET /health``: per-tier health; 200 while any tier serves, 503 when none does.

Probes (load balancers, Kubernetes) call it without a key, so it never asks for one. What it
shows depends on who asks: tier URLs/details, circuit state, the routing policy and the
ledger backlog help an attacker map the deployment, so callers without an admin key get only
the overall status and each tier's state name, unless ``server.public_health_details`` opens
the details to everyone (by default it does only while auth is off).
"""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.errors import GatewayError
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()


@router.get("/health", tags=["ops"])
async def health(request: Request, state: GatewayState = Depends(get_state)) -> JSONResponse:
    tiers = {tier.name: tier.health() for tier in state.tiers}
    ready = [name for name, h in tiers.items() if h["status"] == "ready"]
    status = "ok" if len(ready) == len(tiers) else "degraded" if ready else "unavailable"
    code = 200 if ready else 503
    if not await _may_see_details(request, state):
        return JSONResponse({"status": status, "tiers": {name: {"status": h["status"]} for name, h in tiers.items()}},
                            status_code=code)
    body = {"status": status, "tiers": tiers, "routing_policy": state.policy.name,
            "ledger_backlog": state.ledger.backlog}
    return JSONResponse(body, status_code=code)


async def _may_see_details(request: Request, state: GatewayState) -> bool:
    public = state.config.server.public_health_details
    if public if public is not None else not state.auth.enabled:
        return True
    if not state.auth.enabled or "authorization" not in request.headers:
        return False
    try:
        key = await state.auth.authenticate(request)
    except GatewayError:  # a wrong key on a probe still gets the public view, not a 401
        return False
    return key is not None and key.admin
