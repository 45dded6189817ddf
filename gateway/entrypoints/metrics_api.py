"""``GET /metrics``: Prometheus text format."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()


@router.get("/metrics", tags=["ops"])
async def metrics(state: GatewayState = Depends(get_state)) -> Response:
    for tier in state.tiers:
        state.metrics.tier_up.labels(tier.name).set(1 if tier.is_ready else 0)
    state.metrics.ledger_backlog.set(state.ledger.backlog)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
