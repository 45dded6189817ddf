"""``POST /v1/chat/completions``."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.entrypoints.dependencies import caller
from gateway.auth.keys import ApiKey
from gateway.entrypoints.body import openapi_body
from gateway.entrypoints.chat_completion.protocol import ChatCompletionRequest
from gateway.entrypoints.chat_completion.serving import serving_chat
from gateway.entrypoints.dependencies import get_state
from gateway.state import GatewayState

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest), tags=["openai"])
async def create_chat_completion(request: Request, state: GatewayState = Depends(get_state),
                                 key: ApiKey | None = Depends(caller)) -> Response:
    """OpenAI chat completion; ``model: "auto"`` lets the router pick the tier."""
    return await serving_chat.handle(request, state, key)
