"""``GET /v1/models``: the tiers that serve now, plus ``auto``."""

from fastapi import APIRouter, Depends

from gateway.entrypoints.dependencies import caller
from gateway.entrypoints.models.serving import list_models
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()


@router.get("/v1/models", tags=["openai"], dependencies=[Depends(caller)])
async def show_models(state: GatewayState = Depends(get_state)) -> dict:
    return list_models(state)
