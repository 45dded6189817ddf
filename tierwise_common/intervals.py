"""Confidence intervals for small samples, shared by distill's reports and the benchmarks."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval for a share (small samples: report the interval, not only the share)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]
