"""``POST /v1/chat/completions``."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.auth.keys import ApiKey
from gateway.entrypoints.chat_completion.protocol import ChatCompletionRequest
from gateway.entrypoints.chat_completion.serving import ServingChat
from gateway.entrypoints.dependencies import caller, chat_serving
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest), tags=["openai"])
async def create_chat_completion(request: Request, key: ApiKey | None = Depends(caller),
                                 serving: ServingChat = Depends(chat_serving)) -> Response:
    """OpenAI chat completion; ``model: "auto"`` lets the router pick the tier."""
    return await serving.handle(request, key)
