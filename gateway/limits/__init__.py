"""Per-key rate limits (requests and tokens per minute) and budgets (money per day or month).

A request passes ``admit`` (rates) before routing, then ``reserve`` (budget: its maximum cost is
held while it runs, see ``reservations``) once its tier is known, and ``settle`` when it ends, on
every path, which swaps the hold for the actual cost.
"""

from __future__ import annotations

from typing import Protocol

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.limits.local import LocalLimiter, SpentFn
from gateway.limits.reservations import Reservation


class Limiter(Protocol):
    backend: str

    async def admit(self, key: ApiKey) -> None:
        """Raise a 429 GatewayError if ``key`` may not send a request now."""

    async def reserve(self, key: ApiKey, amount: float) -> Reservation | None:
        """Hold ``amount`` against the key's budget (None: no budget); 429 when the budget is used up,
        503 when the spend cannot be read."""

    async def settle(self, key: ApiKey, tokens: int, cost: float, reservation: Reservation | None = None) -> None:
        """Count a finished request's tokens and cost and release its hold; never raises."""

    async def close(self) -> None:
        """Release connections."""


def build_limiter(config: LimitsConfig, spent_since: SpentFn) -> Limiter:
    if config.redis_url:
        from gateway.limits.redis_backend import RedisLimiter

        return RedisLimiter(config, spent_since)
    return LocalLimiter(config, spent_since)
