"""``POST /v1/completions``."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.auth.keys import ApiKey
from gateway.entrypoints.completion.protocol import CompletionRequest
from gateway.entrypoints.completion.serving import ServingCompletion
from gateway.entrypoints.dependencies import caller, completion_serving
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest), tags=["openai"])
async def create_completion(request: Request, key: ApiKey | None = Depends(caller),
                            serving: ServingCompletion = Depends(completion_serving)) -> Response:
    """OpenAI text completion; ``model: "auto"`` lets the router pick the tier."""
    return await serving.handle(request, key)
