"""Per-key limits shared by every gateway replica through Redis.

Fixed one-minute windows (INCR/INCRBY with an expiry) for requests and tokens. Budgets keep a
settled spend per period (INCRBYFLOAT), seeded from the ledger the first time a period is seen
so a flushed Redis does not forgive past spend, and the holds of requests in flight (a sorted
set scored by when each hold lapses); a Lua script checks and takes a hold atomically, so
replicas cannot race past a budget together.

Redis that fails or stops answering costs one short timeout: a breaker then sends every call
to this replica's own counters (logged) without touching Redis, and a background probe closes
it once Redis answers again, rather than failing requests, letting everything through, or
making every request wait for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.limits.local import LocalLimiter, SpentFn
from gateway.limits.reservations import HOLD_S, Reservation, new_reservation
from gateway.errors import database_unavailable
from gateway.limits.windows import budget_period, minute_window, over_budget, too_many

log = logging.getLogger("gateway.limits")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# Timeouts in a row that open the breaker. One is not enough: on a busy event loop a healthy Redis
# can miss a short timeout now and then, and a breaker opened by that would stop sharing limits
# between replicas for ``redis_retry_s``. A refused or reset connection opens it at once.
TIMEOUTS_TO_TRIP = 3

# KEYS: settled spend, holds. ARGV: budget, hold member ("id|amount"), amount, hold seconds, key expiry.
# Returns -1 when the spend is not seeded yet, 0 when the budget is used up, 1 when the hold is taken.
_RESERVE = """
local spent = redis.call('GET', KEYS[1])
if not spent then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  held = held + tonumber(string.sub(member, string.find(member, '|', 1, true) + 1))
end
if tonumber(spent) + held >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""


class RedisLimiter:
    backend = "redis"

    def __init__(self, config: LimitsConfig, spent_since: SpentFn) -> None:
        assert config.redis_url
        self.config = config
        self.spent_since = spent_since
        self.redis = redis.from_url(config.redis_url, socket_timeout=config.redis_timeout_s,
                                    socket_connect_timeout=config.redis_timeout_s, retry_on_timeout=False)
        self._reserve = self.redis.register_script(_RESERVE)
        self.fallback = LocalLimiter(config, spent_since)
        self._probe: asyncio.Task | None = None  # running while the breaker is open
        self._timeouts = 0  # Redis timeouts in a row
        self._unreleased: list[tuple[str, str]] = []  # (holds key, member) that Redis missed while down

    @property
    def degraded(self) -> bool:
        """True while limits are enforced on this replica only (Redis failed; the probe has not seen it back)."""
        return self._probe is not None and not self._probe.done()

    def _down(self, exc: Exception) -> None:
        """A Redis call failed (this request falls back to local counters): maybe open the breaker."""
        if isinstance(exc, RedisTimeoutError):
            self._timeouts += 1
            if self._timeouts < TIMEOUTS_TO_TRIP:
                return
        self._timeouts = 0
        if not self.degraded:
            log.warning("limits: Redis unreachable (%s); enforcing on this replica only until it answers again",
                        type(exc).__name__)
            self._probe = asyncio.create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self.config.redis_retry_s)
            try:
                await self.redis.ping()
            except REDIS_DOWN:
                continue
            log.warning("limits: Redis answers again; limits are shared across replicas again")
            await self._release_missed()
            return

    async def _release_missed(self) -> None:
        """Drop the Redis holds of requests that ended while Redis was down (else they block until they lapse)."""
        missed, self._unreleased = self._unreleased, []
        with contextlib.suppress(*REDIS_DOWN):
            pipe = self.redis.pipeline(transaction=False)
            for holds_key, member in missed:
                pipe.zrem(holds_key, member)
            await pipe.execute()

    async def admit(self, key: ApiKey) -> None:
        rpm = key.rpm or self.config.default_rpm
        tpm = key.tpm or self.config.default_tpm
        if not (rpm or tpm):
            return
        if self.degraded:
            return await self.fallback.admit(key)
        window, left = minute_window(time.time())
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(f"tw:rq:{key.id}:{window}")
            pipe.expire(f"tw:rq:{key.id}:{window}", 120)
            pipe.get(f"tw:tk:{key.id}:{window}")
            requests, _, tokens = await pipe.execute()
        except REDIS_DOWN as exc:
            self._down(exc)
            return await self.fallback.admit(key)
        self._timeouts = 0
        if tpm and int(tokens or 0) >= tpm:
            raise too_many("tokens per minute", tpm, left)
        if rpm and int(requests) > rpm:
            raise too_many("requests per minute", rpm, left)

    async def reserve(self, key: ApiKey, amount: float) -> Reservation | None:
        if key.budget is None or not key.budget_period:
            return None
        if self.degraded:
            return await self.fallback.reserve(key, amount)
        now = time.time()
        pid, start, period_left = budget_period(now, key.budget_period)
        reservation = new_reservation(pid, amount, local=False)
        spend_key, holds_key = f"tw:spend:{key.id}:{pid}", f"tw:hold:{key.id}:{pid}"
        args = [repr(key.budget), reservation.member, repr(amount), HOLD_S, int(period_left) + 3600]
        try:
            taken = await self._reserve(keys=[spend_key, holds_key], args=args)
            if taken == -1:  # first sight of this period: seed the spend from the ledger
                try:
                    spent = await asyncio.to_thread(self.spent_since, key.id, start)
                except Exception as exc:  # the ledger is down: the spend is unknown
                    raise database_unavailable("This API key's budget cannot be checked right now.", 1) from exc
                await self.redis.set(spend_key, repr(spent), nx=True, ex=int(period_left) + 3600)
                taken = await self._reserve(keys=[spend_key, holds_key], args=args)
        except REDIS_DOWN as exc:
            self._down(exc)
            return await self.fallback.reserve(key, amount)
        self._timeouts = 0
        if taken != 1:
            raise over_budget(key.budget, key.budget_period, period_left)
        return reservation

    async def settle(self, key: ApiKey, tokens: int, cost: float, reservation: Reservation | None = None) -> None:
        if self.degraded or (reservation is not None and reservation.local):
            return await self._settle_locally(key, tokens, cost, reservation)
        now = time.time()
        window, _ = minute_window(now)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incrby(f"tw:tk:{key.id}:{window}", tokens)
            pipe.expire(f"tw:tk:{key.id}:{window}", 120)
            if key.budget is not None and key.budget_period:
                pid = reservation.period if reservation else budget_period(now, key.budget_period)[0]
                pipe.incrbyfloat(f"tw:spend:{key.id}:{pid}", cost)
                if reservation is not None:
                    pipe.zrem(f"tw:hold:{key.id}:{pid}", reservation.member)
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._down(exc)
            await self._settle_locally(key, tokens, cost, reservation)

    async def _settle_locally(self, key: ApiKey, tokens: int, cost: float, reservation: Reservation | None) -> None:
        if reservation is not None and not reservation.local:
            self._unreleased.append((f"tw:hold:{key.id}:{reservation.period}", reservation.member))
            del self._unreleased[:-10_000]  # bounded: older holds lapse on their own (HOLD_S)
        await self.fallback.settle(key, tokens, cost, reservation)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.redis.aclose()
