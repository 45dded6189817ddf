"""The cascade what-if's threshold (``benchmarks/flywheel_cascade.py``): chosen on validation as the
lowest confidence whose kept records still agree with the teacher on the target share."""

from __future__ import annotations

import math

from benchmarks.flywheel_cascade import choose_threshold


def test_the_lowest_threshold_that_keeps_the_target_agreement() -> None:
    conf = [0.99, 0.98, 0.95, 0.90, 0.80, 0.50]
    agree = [True, True, True, False, True, False]
    assert choose_threshold(conf, agree, 1.0) == 0.95          # the first three agree
    assert choose_threshold(conf, agree, 0.8) == 0.80          # 4 of 5 kept agree
    assert choose_threshold(conf, agree, 0.6) == 0.50          # 4 of 6
    assert math.isinf(choose_threshold([0.9, 0.8], [False, True], 1.0))  # the most confident is wrong
    assert choose_threshold([0.9, 0.8], [False, False], 0.5) == float("inf")  # keep nothing
