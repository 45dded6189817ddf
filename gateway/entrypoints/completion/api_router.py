"""``POST /v1/completions``."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.entrypoints.dependencies import caller
from gateway.auth.keys import ApiKey
from gateway.entrypoints.body import openapi_body
from gateway.entrypoints.completion.protocol import CompletionRequest
from gateway.entrypoints.completion.serving import serving_completion
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()


@router.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest), tags=["openai"])
async def create_completion(request: Request, state: GatewayState = Depends(get_state),
                                 key: ApiKey | None = Depends(caller)) -> Response:
    """OpenAI text completion; ``model: "auto"`` lets the router pick the tier."""
    return await serving_completion.handle(request, state, key)
