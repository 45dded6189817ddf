"""Per-key rate limits (requests and tokens per minute) and budgets (money per day or month)."""

from __future__ import annotations

from typing import Protocol

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.limits.local import LocalLimiter, SpentFn


class Limiter(Protocol):
    backend: str

    async def admit(self, key: ApiKey) -> None:
        """Raise a 429 GatewayError if ``key`` may not send a request now."""

    async def settle(self, key: ApiKey, tokens: int, cost: float) -> None:
        """Count a finished request's tokens and cost; never raises."""

    async def close(self) -> None:
        """Release connections."""


def build_limiter(config: LimitsConfig, spent_since: SpentFn) -> Limiter:
    if config.redis_url:
        from gateway.limits.redis_backend import RedisLimiter

        return RedisLimiter(config, spent_since)
    return LocalLimiter(config, spent_since)
