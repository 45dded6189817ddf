"""``POST /v1/embeddings``."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.entrypoints.dependencies import serve_sampling
from gateway.entrypoints.embeddings.protocol import EmbeddingRequest
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest), tags=["openai"])
async def create_embedding(request: Request) -> Response:
    """OpenAI embeddings, served by a tier that declares ``supports.embeddings``."""
    return await serve_sampling(request, "serving_embedding")
