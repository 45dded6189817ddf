"""Rolling student-vs-teacher agreement, and what the gateway does when it falls.

When the mean agreement over the last ``window`` shadow pairs drops below ``floor`` (with at
least ``min_samples`` pairs), the monitor raises an alarm (a log warning and a metric) and,
if ``adjust_routing`` is on, moves the router's threshold toward the teacher by ``step`` per
new pair while the alarm lasts (score = P(student not good enough), so a lower threshold
sends more to the teacher), by at most ``max_shift`` in all. Once agreement is back above the
floor the threshold returns to where the operator set it.
"""

from __future__ import annotations

import logging
from collections import deque

from gateway.config import ShadowConfig

log = logging.getLogger("gateway.shadow")


class DriftMonitor:
    def __init__(self, config: ShadowConfig) -> None:
        self.config = config
        self.scores: deque[float] = deque(maxlen=config.window)
        self.alarm = False
        self.threshold_shift = 0.0  # added to the routing threshold (<= 0: toward the teacher)

    def snapshot(self) -> dict:
        """What ``restore`` needs: the window, the alarm and the shift (JSON-able)."""
        return {"scores": list(self.scores), "alarm": self.alarm, "threshold_shift": self.threshold_shift}

    def restore(self, state: dict) -> None:
        self.scores = deque((float(s) for s in state.get("scores", [])), maxlen=self.config.window)
        self.alarm = bool(state.get("alarm", False))
        self.threshold_shift = float(state.get("threshold_shift", 0.0))

    @property
    def rolling(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def observe(self, score: float) -> None:
        self.scores.append(score)
        if len(self.scores) < self.config.min_samples:
            return
        mean = self.rolling
        assert mean is not None
        if mean < self.config.floor:
            if not self.alarm:
                log.warning("shadow: student/teacher agreement %.3f over the last %d pairs is below the floor %.3f",
                            mean, len(self.scores), self.config.floor)
            self.alarm = True
            if self.config.adjust_routing:
                self.threshold_shift = max(self.threshold_shift - self.config.step, -self.config.max_shift)
        elif self.alarm:
            log.warning("shadow: agreement recovered to %.3f; routing threshold restored", mean)
            self.alarm = False
            self.threshold_shift = 0.0
