"""``/v1/embeddings``: passed through to a tier that declares ``supports.embeddings`` (a vLLM
pooling model, a URL tier, or a hosted model through litellm), booked in the ledger like
every other request (prompt tokens, cost, the teacher-free counterfactual: the teacher does
not embed, so the counterfactual is the embedding itself).

It shares the engine's admission, failover, booking and headers (``SamplingServing``); only
the request model and the choice of tier differ: ``model`` names an embedding tier, or
``auto`` takes the first one configured.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.auth.keys import ApiKey
from gateway.entrypoints.embeddings.protocol import EmbeddingRequest
from gateway.entrypoints.engine.serving import AUTO, SamplingServing
from gateway.errors import GatewayError, model_not_found, tier_unavailable, unsupported_by_tier
from gateway.ledger.booking import RequestRecord
from gateway.limits.reservations import prompt_tokens_estimate
from gateway.tiers.base import Tier


class ServingEmbedding(SamplingServing):
    """Built in the lifespan with the engine's collaborators; fetched by the route."""

    def __init__(self, **collaborators: Any) -> None:
        super().__init__("embeddings", EmbeddingRequest, **collaborators)  # type: ignore[arg-type]

    async def _handle(self, request: Request, key: ApiKey | None) -> Response:
        record = self._new_record(key)
        async with self._booked_if_it_fails(record):
            body, parsed = await self._read(request, record)
            if key is not None:
                await self.limiter.admit(key)
            tiers = self._embedding_tiers(parsed.model, record)
            if key is not None and key.budget is not None:
                record.reservation = await self.limiter.reserve(key, self.pricing.max_cost(
                    [t.name for t in tiers], prompt_tokens_estimate({"prompt": body.get("input")}), 0))
            reply = await self._complete(tiers, body, record)
        record.take_usage(reply.data.get("usage"))
        await self.booking.book(record)
        return Response(content=reply.content, media_type="application/json", headers=self._headers(record))

    def _embedding_tiers(self, model: str, record: RequestRecord) -> list[Tier]:
        """The named embedding tier (a 400 if it does not embed), or for ``auto`` every embedding
        tier in config order; then the named tier's fallbacks that embed too."""
        if model == AUTO:
            chosen = next((t for t in self.tiers if t.config.supports.embeddings), None)
            if chosen is None:
                raise GatewayError("No configured tier serves embeddings.", param="model", code="unsupported_by_tiers")
        else:
            chosen = self.tiers.resolve(model)
            if chosen is None:
                raise model_not_found(model)
            if not chosen.config.supports.embeddings:
                raise unsupported_by_tier(chosen.name, ["embeddings"], "model")
        record.tier = chosen.name
        order = [chosen, *(self.tiers.resolve(name) for name in chosen.config.fallbacks)]
        candidates = [t for t in order if t is not None and t.available and t.config.supports.embeddings]
        if not candidates:
            raise tier_unavailable(chosen.name, chosen.status.value + (f": {chosen.detail}" if chosen.detail else ""))
        if candidates[0] is not chosen:
            self._note_fallback(record, chosen.name, candidates[0].name, "not available")
        return candidates
