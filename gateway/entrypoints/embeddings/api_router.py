"""``POST /v1/embeddings``."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.auth.keys import ApiKey
from gateway.entrypoints.dependencies import caller, embedding_serving
from gateway.entrypoints.embeddings.protocol import EmbeddingRequest
from gateway.entrypoints.embeddings.serving import ServingEmbedding
from gateway.entrypoints.engine.body import openapi_body

router = APIRouter()


@router.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest), tags=["openai"])
async def create_embedding(request: Request, key: ApiKey | None = Depends(caller),
                           serving: ServingEmbedding = Depends(embedding_serving)) -> Response:
    """OpenAI embeddings, served by a tier that declares ``supports.embeddings``."""
    return await serving.handle(request, key)
