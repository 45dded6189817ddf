"""The loop monitor sees a held event loop and the collector's pauses (real loop, real gc)."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry

from gateway.loop_monitor import LoopMonitor


def _value(registry: CollectorRegistry, name: str, labels: dict | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_a_held_loop_shows_as_lag_and_gc_pauses_are_counted() -> None:
    registry = CollectorRegistry()

    async def scenario() -> None:
        monitor = LoopMonitor(registry, interval_s=0.005, warn_s=10.0)
        monitor.start()
        try:
            await asyncio.sleep(0.05)  # a few on-time samples
            time.sleep(0.12)  # noqa: ASYNC251 - holding the loop on purpose
            await asyncio.sleep(0.03)
            gc.collect()
        finally:
            await monitor.stop()

    asyncio.run(scenario())
    assert _value(registry, "tierwise_event_loop_lag_max_seconds") >= 0.1
    held = _value(registry, "tierwise_event_loop_lag_seconds_count") - _value(
        registry, "tierwise_event_loop_lag_seconds_bucket", {"le": "0.1"})
    assert held >= 1  # the one sample that waited behind the hold
    assert _value(registry, "tierwise_event_loop_lag_seconds_bucket", {"le": "0.01"}) >= 3  # the others were on time
    assert _value(registry, "tierwise_gc_pause_seconds_count", {"generation": "2"}) >= 1


def test_stop_removes_the_gc_callback() -> None:
    before = list(gc.callbacks)

    async def scenario() -> None:
        monitor = LoopMonitor(CollectorRegistry(), interval_s=0)
        monitor.start()
        assert len(gc.callbacks) == len(before) + 1
        await monitor.stop()

    asyncio.run(scenario())
    assert gc.callbacks == before
