"""Single-request scoring: chat formats and the fast path's agreement with the estimator."""

from __future__ import annotations

import time

import numpy as np

from router import ComplexityRouter, Router
from router.messages import to_text


def test_message_formats_normalise() -> None:
    assert to_text("2+2?") == to_text([{"role": "user", "content": "2+2?"}])
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]}]
    assert to_text(parts).last_user == "a\nb"
    conv = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    text = to_text(conv)
    assert text.last_user == "second" and text.n_turns == 2
    assert "[system] be brief" in text.conversation and "first" in text.conversation


def test_fast_path_equals_predict_proba(fitted: ComplexityRouter, sample) -> None:
    router = Router(estimator=fitted, threshold=0.5)
    convs = list(sample.test.prompts[:150]) + [
        "",
        "hi",
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Prove sqrt(2) is irrational."}],
        [{"role": "user", "content": [{"type": "text", "text": "def f(x): return x**2  # derivative?"}]}],
        [{"role": "user", "content": "Wie spät ist es? 東京の天気は？"}],
    ]
    batch = fitted.predict_proba(convs)[:, 1]
    single = np.array([router.score(c) for c in convs])
    np.testing.assert_allclose(single, batch, rtol=0, atol=1e-9)
    assert np.all((single >= 0) & (single <= 1))


def test_string_and_message_list_score_the_same(fitted: ComplexityRouter, sample) -> None:
    router = Router(estimator=fitted, threshold=0.5)
    p = sample.test.prompts[0]
    assert router.score(p) == router.score([{"role": "user", "content": p}])


def test_single_request_latency(fitted: ComplexityRouter, sample) -> None:
    """Loose CI guard (shared runners are noisy); the benchmark reports the real p50/p99."""
    router = Router(estimator=fitted, threshold=0.5)
    prompts = [[{"role": "user", "content": p}] for p in sample.test.prompts[:300]]
    for m in prompts[:20]:
        router.score(m)
    times = []
    for m in prompts:
        t0 = time.perf_counter()
        router.score(m)
        times.append(time.perf_counter() - t0)
    assert np.percentile(times, 50) < 0.002
