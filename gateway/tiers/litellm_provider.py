"""A hosted flagship (OpenAI, Anthropic, ...) reached through litellm.

litellm translates the OpenAI request to the provider's API and back, and its cost map
prices the tokens when the config gives no price. It is imported only when a config has a
litellm tier: the import is slow and would otherwise tax every gateway start.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import TierConfig
from gateway.tiers.base import Endpoint, Tier, TierStatus, UpstreamError, UpstreamReply

# litellm fetches its cost map from the network at import unless told not to; the copy in
# the package is what a gateway with no egress must use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _litellm() -> Any:
    import litellm

    return litellm


def cost_from_map(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """litellm's list price for these tokens, or None if the model is not in its map."""
    try:
        prompt_cost, completion_cost = _litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises bare Exceptions for unknown models
        return None
    return float(prompt_cost + completion_cost)


class LiteLLMTier(Tier):
    def __init__(self, config: TierConfig) -> None:
        super().__init__(config)
        assert config.litellm is not None
        self.provider = config.litellm

    async def start(self) -> None:
        _litellm()
        self.status = TierStatus.READY

    def _kwargs(self, body: dict) -> dict:
        kwargs = {k: v for k, v in body.items() if k != "model"}
        kwargs["model"] = self.provider.model
        if self.provider.api_base:
            kwargs["api_base"] = self.provider.api_base
        if self.provider.api_key_env:
            kwargs["api_key"] = os.environ.get(self.provider.api_key_env, "")
        kwargs["timeout"] = self.config.timeout_s
        return kwargs

    async def _call(self, endpoint: Endpoint, kwargs: dict) -> Any:
        litellm = _litellm()
        try:
            if endpoint == "chat":
                return await litellm.acompletion(**kwargs)
            return await litellm.atext_completion(**kwargs)
        except Exception as exc:  # litellm maps provider errors to exceptions with status_code
            status = int(getattr(exc, "status_code", 502) or 502)
            raise UpstreamError(status if 400 <= status < 500 else 502, str(getattr(exc, "message", exc))) from exc

    async def complete(self, endpoint: Endpoint, body: dict) -> UpstreamReply:
        response = await self._call(endpoint, self._kwargs(body))
        data = response.model_dump(exclude_none=True)
        return UpstreamReply(content=json.dumps(data).encode(), data=data)

    async def stream(self, endpoint: Endpoint, body: dict) -> AsyncIterator[bytes]:
        response = await self._call(endpoint, self._kwargs(body))
        async for chunk in response:
            yield b"data: " + json.dumps(chunk.model_dump(exclude_none=True)).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
