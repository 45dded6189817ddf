"""Wrong keys per client address per minute: past the limit, an address gets 429s.

Why: each new wrong key costs a key-store lookup (however well deduplicated) and is a guess
at a secret. Counting per address and refusing early keeps a scanner off the database while
valid keys from the same address (a NAT, a shared proxy) keep working: only lookups of keys
the gateway does not know are refused.
"""

from __future__ import annotations

import time

from gateway.limits.windows import minute_window, too_many


class FailureLimit:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute  # 0: no limit
        self._window = -1
        self._counts: dict[str, int] = {}

    def _current(self) -> tuple[dict[str, int], float]:
        window, left = minute_window(time.time())
        if window != self._window:  # a new minute forgets the last one (bounds memory too)
            self._window, self._counts = window, {}
        return self._counts, left

    def check(self, address: str) -> None:
        """Raise a 429 if ``address`` has used up its wrong keys for this minute."""
        if not self.per_minute:
            return
        counts, left = self._current()
        if counts.get(address, 0) >= self.per_minute:
            raise too_many("failed API keys per minute from this address", self.per_minute, left)

    def failed(self, address: str) -> None:
        if self.per_minute:
            counts, _ = self._current()
            counts[address] = counts.get(address, 0) + 1
