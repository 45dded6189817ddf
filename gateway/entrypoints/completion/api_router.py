"""``POST /v1/completions``."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.entrypoints.completion.protocol import CompletionRequest
from gateway.entrypoints.dependencies import serve_sampling
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest), tags=["openai"])
async def create_completion(request: Request) -> Response:
    """OpenAI text completion; ``model: "auto"`` lets the router pick the tier."""
    return await serve_sampling(request, "serving_completion")
