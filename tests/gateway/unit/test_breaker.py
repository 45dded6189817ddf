"""The per-tier circuit breaker (``gateway/tiers/breaker.py``), without any tier behind it."""

from __future__ import annotations

import time

from gateway.tiers.breaker import CircuitBreaker


def test_opens_only_after_the_threshold_of_consecutive_failures():
    breaker = CircuitBreaker(failures=3, cooldown_s=60)
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and not breaker.is_open
    breaker.failure()
    assert not breaker.allow() and breaker.is_open
    assert breaker.state() == {"open": True, "consecutive_failures": 3, "times_opened": 1}


def test_a_success_resets_the_count_so_scattered_failures_never_open_it():
    breaker = CircuitBreaker(failures=2, cooldown_s=60)
    for _ in range(5):
        breaker.failure()
        breaker.success()
    assert breaker.allow() and breaker.state()["times_opened"] == 0


def test_a_health_check_during_the_cooldown_keeps_it_open():
    breaker = CircuitBreaker(failures=1, cooldown_s=3600)
    breaker.failure()
    breaker.health_ok()
    assert not breaker.allow()


def test_the_first_passing_health_check_after_the_cooldown_closes_it():
    breaker = CircuitBreaker(failures=1, cooldown_s=0.05)
    breaker.failure()
    time.sleep(0.06)
    breaker.health_ok()
    assert breaker.allow() and breaker.state()["consecutive_failures"] == 0


def test_failures_while_open_do_not_reopen_or_recount_it():
    breaker = CircuitBreaker(failures=1, cooldown_s=0.05)
    breaker.failure()
    breaker.failure()  # still open: the same opening, not a second one
    assert breaker.state()["times_opened"] == 1
    time.sleep(0.06)
    breaker.health_ok()
    breaker.failure()
    assert breaker.is_open and breaker.state()["times_opened"] == 2


def test_a_health_check_on_a_closed_breaker_changes_nothing():
    breaker = CircuitBreaker(failures=3, cooldown_s=0)
    breaker.failure()
    breaker.health_ok()
    assert breaker.state() == {"open": False, "consecutive_failures": 1, "times_opened": 0}
