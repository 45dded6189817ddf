"""``GET /metrics``: Prometheus text format."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.entrypoints.dependencies import get_state
from gateway.entrypoints.metrics.serving import render_metrics
from gateway.state import GatewayState

router = APIRouter()


@router.get("/metrics", tags=["ops"])
async def metrics(state: GatewayState = Depends(get_state)) -> Response:
    return Response(render_metrics(state), media_type=CONTENT_TYPE_LATEST)
