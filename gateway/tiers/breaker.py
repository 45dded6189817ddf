"""A circuit breaker per tier: stop sending to a tier that keeps failing, until its health
check passes again.

Consecutive failures (5xx, timeouts, refused connections; never the client's own 4xx) open
the circuit; an open circuit stays open for at least ``cooldown_s`` and closes on the first
successful health check after that, so traffic returns as soon as the tier is back.
"""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, failures: int = 3, cooldown_s: float = 10.0) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        return self.opened_at is None

    def success(self) -> None:
        self.consecutive_failures = 0

    def failure(self) -> None:
        self.consecutive_failures += 1
        if self.opened_at is None and self.consecutive_failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.times_opened += 1

    def health_ok(self) -> None:
        """A passing health check closes an open circuit once the cooldown is over."""
        if self.opened_at is not None and time.monotonic() - self.opened_at >= self.cooldown_s:
            self.opened_at = None
            self.consecutive_failures = 0

    def state(self) -> dict:
        return {"open": self.is_open, "consecutive_failures": self.consecutive_failures,
                "times_opened": self.times_opened}
