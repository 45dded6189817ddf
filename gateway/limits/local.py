"""Per-key limits kept in this process: right for one replica, and the fallback when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.limits.reservations import HOLD_S, Reservation, new_reservation
from gateway.errors import database_unavailable
from gateway.limits.windows import budget_period, minute_window, over_budget, too_many

SpentFn = Callable[[str, datetime], float]  # (api key id, period start) -> spend so far, from the ledger


class LocalLimiter:
    backend = "local"

    def __init__(self, config: LimitsConfig, spent_since: SpentFn) -> None:
        self.config = config
        self.spent_since = spent_since
        self.requests: dict[tuple[str, int], int] = {}
        self.tokens: dict[tuple[str, int], int] = {}
        self.spend: dict[tuple[str, str], float] = {}  # settled spend per (key id, budget period)
        self.holds: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}  # id -> (amount, lapses at)
        self._window = 0

    def _prune(self, window: int) -> None:
        if window != self._window:
            self._window = window
            self.requests = {k: v for k, v in self.requests.items() if k[1] >= window}
            self.tokens = {k: v for k, v in self.tokens.items() if k[1] >= window}

    async def admit(self, key: ApiKey) -> None:
        now = time.time()
        window, left = minute_window(now)
        self._prune(window)
        rpm = key.rpm or self.config.default_rpm
        tpm = key.tpm or self.config.default_tpm
        if tpm and self.tokens.get((key.id, window), 0) >= tpm:
            raise too_many("tokens per minute", tpm, left)
        if rpm:
            count = self.requests.get((key.id, window), 0) + 1
            self.requests[(key.id, window)] = count
            if count > rpm:
                raise too_many("requests per minute", rpm, left)

    async def reserve(self, key: ApiKey, amount: float) -> Reservation | None:
        if key.budget is None or not key.budget_period:
            return None
        now = time.time()
        pid, start, period_left = budget_period(now, key.budget_period)
        if (key.id, pid) not in self.spend:
            try:
                spent = await asyncio.to_thread(self.spent_since, key.id, start)
            except Exception as exc:  # the ledger is down: the spend is unknown, so the budget cannot be checked
                raise database_unavailable("This API key's budget cannot be checked right now.", 1) from exc
            self.spend.setdefault((key.id, pid), spent)  # a concurrent seeder or a settle may have been first
        # From here to the hold nothing awaits, so concurrent requests see each other's holds.
        holds = self.holds.setdefault((key.id, pid), {})
        for hold_id in [h for h, (_, lapses) in holds.items() if lapses <= now]:
            del holds[hold_id]
        if self.spend[(key.id, pid)] + sum(amount for amount, _ in holds.values()) >= key.budget:
            raise over_budget(key.budget, key.budget_period, period_left)
        reservation = new_reservation(pid, amount, local=True)
        holds[reservation.id] = (amount, now + HOLD_S)
        return reservation

    async def settle(self, key: ApiKey, tokens: int, cost: float, reservation: Reservation | None = None) -> None:
        now = time.time()
        window, _ = minute_window(now)
        if tokens:
            self.tokens[(key.id, window)] = self.tokens.get((key.id, window), 0) + tokens
        if key.budget is not None and key.budget_period:
            pid = reservation.period if reservation else budget_period(now, key.budget_period)[0]
            if reservation is not None:
                self.holds.get((key.id, pid), {}).pop(reservation.id, None)
            if (key.id, pid) in self.spend:
                self.spend[(key.id, pid)] += cost

    async def close(self) -> None:
        """Nothing to release (the counters live in this process)."""
