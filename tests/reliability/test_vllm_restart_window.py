"""vLLM crashes are counted in a sliding window (issue #15, item 13).

The supervisor used to count every crash of the gateway's lifetime, so a tier that crashed five
times in a month was given up for good. ``CrashWindow`` forgives crashes older than the window.
"""

from __future__ import annotations

from gateway.config import VLLMServer
from gateway.tiers.vllm_process import CrashWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_crashes_spread_over_time_never_exhaust_the_restarts():
    clock = FakeClock()
    window = CrashWindow(limit=5, window_s=600, clock=clock)
    for _ in range(50):  # a crash every 3 minutes: at most 4 in any 10 minutes
        window.crash()
        assert not window.exhausted()
        clock.now += 180
    assert window.recent <= 4


def test_a_crash_loop_is_given_up_after_the_limit():
    clock = FakeClock()
    window = CrashWindow(limit=5, window_s=600, clock=clock)
    verdicts = []
    for _ in range(6):
        window.crash()
        verdicts.append(window.exhausted())
        clock.now += window.backoff_s()  # the supervisor sleeps this long before restarting
    assert verdicts == [False] * 5 + [True]  # five restarts, then the sixth crash gives up


def test_backoff_doubles_with_recent_crashes_and_resets_when_they_age_out():
    clock = FakeClock()
    window = CrashWindow(limit=10, window_s=60, clock=clock)
    waits = []
    for _ in range(6):
        window.crash()
        waits.append(window.backoff_s())
    assert waits == [2, 4, 8, 16, 30, 30]
    clock.now += 61
    window.crash()
    assert (window.recent, window.backoff_s()) == (1, 2)


def test_the_window_is_configurable_per_tier():
    server = VLLMServer(model="/m", max_restarts=2, restart_window_s=30)
    assert (server.max_restarts, server.restart_window_s) == (2, 30)
    assert VLLMServer(model="/m").restart_window_s == 600
