"""``GET /v1/models``: the tiers that serve now, plus ``auto``."""

from fastapi import APIRouter, Depends

from gateway.auth.authenticator import caller
from gateway.entrypoints.models.serving import list_models
from gateway.state import GatewayState, get_state

router = APIRouter()


@router.get("/v1/models", tags=["openai"], dependencies=[Depends(caller)])
async def show_models(state: GatewayState = Depends(get_state)) -> dict:
    return list_models(state)
