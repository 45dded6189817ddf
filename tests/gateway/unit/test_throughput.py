"""The measured throughput behind per_hour prices: busy time only, restarts, real vLLM text."""

from __future__ import annotations

import pytest

from gateway.tier_config import Price
from gateway.tiers.throughput import Sample, ThroughputWindow, parse_vllm_metrics

# As vLLM 0.32 writes it (trimmed): the counter's TYPE line carries the _total name.
VLLM_TEXT = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="teacher"} 1200.0
vllm:generation_tokens_created{engine="0",model_name="teacher"} 1.79e+09
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="teacher"} 3.0
"""


def test_parses_vllm_metrics_text():
    assert parse_vllm_metrics(VLLM_TEXT) == (1200.0, 3.0)
    assert parse_vllm_metrics("# nothing here\n") is None


def test_idle_time_is_not_charged():
    window = ThroughputWindow(window_s=100, min_busy_s=2)
    # 2 s busy at 100 tokens/s, then 10 s idle: still 100 tokens/s.
    for at, generated, running in [(0, 0, 1), (1, 100, 1), (2, 200, 0), (7, 200, 0), (12, 200, 0)]:
        window.add(Sample(at, generated, running))
    assert window.tokens_per_s() == pytest.approx(100.0)


def test_too_little_busy_time_is_no_measurement_and_a_restart_starts_over():
    window = ThroughputWindow(window_s=100, min_busy_s=5)
    window.add(Sample(0, 0, 1))
    window.add(Sample(1, 50, 1))
    assert window.tokens_per_s() is None  # 1 busy second < 5
    for at in range(2, 10):
        window.add(Sample(at, 50 * at, 1))
    assert window.tokens_per_s() == pytest.approx(50.0)
    window.add(Sample(10, 3, 1))  # the counter went backwards: the server restarted
    assert len(window.samples) == 1 and window.tokens_per_s() is None


def test_old_samples_leave_the_window():
    window = ThroughputWindow(window_s=10, min_busy_s=1)
    for at in range(0, 30):
        window.add(Sample(at, (10 if at < 15 else 40) * at, 1))
    assert window.samples[0].at >= 19
    assert window.tokens_per_s() == pytest.approx(40.0)


def test_per_hour_price_divides_machine_cost_by_throughput():
    price = Price(per_hour=0.36, prompt_token_ratio=0.1)
    assert price.per_million(100.0) == pytest.approx((0.1, 1.0))  # 0.36 $/h / 360,000 tokens/h = $1 / M
    assert price.cost(1000, 100, 100.0) == pytest.approx((1000 * 0.1 + 100 * 1.0) / 1e6)
    with pytest.raises(ValueError, match="per_hour"):
        Price(per_hour=1.0, input_per_million=1.0, output_per_million=1.0)
    with pytest.raises(ValueError):
        Price()
