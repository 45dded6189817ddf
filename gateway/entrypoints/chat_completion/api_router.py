"""``POST /v1/chat/completions``."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.entrypoints.chat_completion.protocol import ChatCompletionRequest
from gateway.entrypoints.dependencies import serve_sampling
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest), tags=["openai"])
async def create_chat_completion(request: Request) -> Response:
    """OpenAI chat completion; ``model: "auto"`` lets the router pick the tier."""
    return await serve_sampling(request, "serving_chat")
