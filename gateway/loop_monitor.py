"""Event-loop health: how late the loop runs what is due, and how long garbage collection holds it.

One event loop serves every open request, so anything that holds it (a long synchronous
computation, a garbage collection over many live objects, a blocking call) delays every
client at once and shows up as tail latency. ``LoopMonitor`` makes that visible:

* a timer due every ``interval_s``: how late it ran is the loop's lag
  (``tierwise_event_loop_lag_seconds``). With a 10 ms interval any hold longer than ~10 ms
  delays a due timer, so it is caught, not sampled by luck; the cost is ~100 wake-ups a second.
* ``gc.callbacks``: each collection's duration per generation (``tierwise_gc_pause_seconds``).

A lag over ``warn_s`` is logged (at most once every 10 s) with the longest GC pause seen since
the last warning, which tells "the collector" from "something else" at a glance.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram

log = logging.getLogger("gateway.loop")

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WARN_EVERY_S = 10.0


class LoopMonitor:
    def __init__(self, registry: CollectorRegistry, interval_s: float = 0.01, warn_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.warn_s = warn_s
        self.lag = Histogram("tierwise_event_loop_lag_seconds", "How late the event loop ran a timer that was due "
                             "(any hold of the loop longer than the sampling interval shows here)",
                             buckets=LAG_BUCKETS, registry=registry)
        self.max_lag = Gauge("tierwise_event_loop_lag_max_seconds", "Longest event-loop lag since start",
                             registry=registry, multiprocess_mode="max")
        self.gc_pause = Histogram("tierwise_gc_pause_seconds", "Duration of garbage collections, per generation",
                                  ["generation"], buckets=LAG_BUCKETS, registry=registry)
        self._gc_children = [self.gc_pause.labels(str(g)) for g in range(3)]
        self._gc_started = 0.0
        self.longest_lag_s = 0.0
        self._longest_gc_s = 0.0  # since the last warning
        self._last_warning = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._sample(), name="loop-monitor")

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe_lag(max(0.0, loop.time() - due))

    def observe_lag(self, lag_s: float) -> None:
        self.lag.observe(lag_s)
        if lag_s > self.longest_lag_s:
            self.longest_lag_s = lag_s
            self.max_lag.set(lag_s)
        if lag_s >= self.warn_s:
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:
                self._last_warning = now
                log.warning("event loop held for %.0f ms (longest GC pause since the last warning: %.0f ms)",
                            lag_s * 1000, self._longest_gc_s * 1000)
                self._longest_gc_s = 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        self._gc_children[min(int(info.get("generation", 0)), 2)].observe(pause)
        self._longest_gc_s = max(self._longest_gc_s, pause)
