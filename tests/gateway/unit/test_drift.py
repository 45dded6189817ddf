"""The shadow drift monitor (``gateway/shadow/drift.py``): alarm, routing shift, recovery."""

from __future__ import annotations

import logging

import pytest

from gateway.config import ShadowConfig
from gateway.shadow.drift import DriftMonitor


def monitor(**overrides) -> DriftMonitor:
    settings = {"window": 4, "min_samples": 3, "floor": 0.6, "step": 0.05, "max_shift": 0.12,
                "adjust_routing": True, **overrides}
    return DriftMonitor(ShadowConfig(**settings))


def test_no_alarm_before_min_samples_even_on_total_disagreement():
    drift = monitor()
    drift.observe(0.0)
    drift.observe(0.0)
    assert not drift.alarm and drift.threshold_shift == 0.0 and drift.rolling == 0.0


def test_alarm_shifts_the_threshold_toward_the_teacher_step_by_step_up_to_max_shift(caplog):
    drift = monitor()
    with caplog.at_level(logging.WARNING, logger="gateway.shadow"):
        for _ in range(3):
            drift.observe(0.1)
        assert drift.alarm and drift.threshold_shift == pytest.approx(-0.05)
        drift.observe(0.1)
        drift.observe(0.1)
    assert drift.threshold_shift == pytest.approx(-0.12)  # -0.15 capped by max_shift
    assert sum("below the floor" in r.message for r in caplog.records) == 1  # logged once per alarm


def test_recovery_restores_the_operators_threshold():
    drift = monitor()
    for _ in range(3):
        drift.observe(0.0)
    for _ in range(4):  # the window of 4 now holds only agreeing pairs
        drift.observe(1.0)
    assert not drift.alarm and drift.threshold_shift == 0.0


def test_the_rolling_mean_covers_only_the_last_window_pairs():
    drift = monitor(window=4)
    for score in (0.0, 0.0, 1.0, 1.0, 1.0, 1.0):
        drift.observe(score)
    assert drift.rolling == 1.0


def test_alarm_without_adjust_routing_leaves_the_threshold_alone():
    drift = monitor(adjust_routing=False)
    for _ in range(5):
        drift.observe(0.0)
    assert drift.alarm and drift.threshold_shift == 0.0


def test_at_the_floor_is_not_below_it():
    drift = monitor(floor=0.5)
    for _ in range(4):
        drift.observe(0.5)
    assert not drift.alarm
