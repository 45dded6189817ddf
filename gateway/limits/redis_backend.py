"""Per-key limits shared by every gateway replica through Redis.

Fixed one-minute windows (INCR/INCRBY with an expiry) for requests and tokens, and a running
spend per budget period (INCRBYFLOAT), seeded from the ledger the first time a period is seen
so a flushed Redis does not forgive past spend. If Redis cannot be reached the limiter keeps
working on this replica's own counters (logged), rather than failing requests or letting
everything through.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.limits.local import LocalLimiter, SpentFn
from gateway.limits.windows import budget_period, minute_window, over_budget, too_many

log = logging.getLogger("gateway.limits")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisLimiter:
    backend = "redis"

    def __init__(self, config: LimitsConfig, spent_since: SpentFn) -> None:
        assert config.redis_url
        self.config = config
        self.spent_since = spent_since
        self.redis = redis.from_url(config.redis_url, socket_timeout=0.25, socket_connect_timeout=0.25,
                                    retry_on_timeout=False)
        self.fallback = LocalLimiter(config, spent_since)
        self.degraded = False
        self._warned_at = 0.0

    def _down(self, exc: Exception) -> None:
        self.degraded = True
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning("limits: Redis unreachable (%s); enforcing on this replica only", type(exc).__name__)

    async def admit(self, key: ApiKey) -> None:
        rpm = key.rpm or self.config.default_rpm
        tpm = key.tpm or self.config.default_tpm
        has_budget = key.budget is not None and key.budget_period
        if not (rpm or tpm or has_budget):
            return
        now = time.time()
        window, left = minute_window(now)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(f"tw:rq:{key.id}:{window}")
            pipe.expire(f"tw:rq:{key.id}:{window}", 120)
            pipe.get(f"tw:tk:{key.id}:{window}")
            if has_budget:
                pid, start, period_left = budget_period(now, key.budget_period)
                pipe.get(f"tw:spend:{key.id}:{pid}")
            results = await pipe.execute()
            if has_budget and results[3] is None:
                spent = await asyncio.to_thread(self.spent_since, key.id, start)
                await self.redis.set(f"tw:spend:{key.id}:{pid}", repr(spent), nx=True, ex=int(period_left) + 3600)
                results[3] = await self.redis.get(f"tw:spend:{key.id}:{pid}")
        except REDIS_DOWN as exc:
            self._down(exc)
            return await self.fallback.admit(key)
        self.degraded = False
        if tpm and int(results[2] or 0) >= tpm:
            raise too_many("tokens per minute", tpm, left)
        if rpm and int(results[0]) > rpm:
            raise too_many("requests per minute", rpm, left)
        if has_budget and float(results[3] or 0) >= key.budget:
            raise over_budget(key.budget, key.budget_period, period_left)

    async def settle(self, key: ApiKey, tokens: int, cost: float) -> None:
        now = time.time()
        window, _ = minute_window(now)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incrby(f"tw:tk:{key.id}:{window}", tokens)
            pipe.expire(f"tw:tk:{key.id}:{window}", 120)
            if key.budget is not None and key.budget_period:
                pid, _, _ = budget_period(now, key.budget_period)
                pipe.incrbyfloat(f"tw:spend:{key.id}:{pid}", cost)
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._down(exc)
            await self.fallback.settle(key, tokens, cost)

    async def close(self) -> None:
        await self.redis.aclose()
