"""Evaluate a router next to the baselines the routing literature compares against.

Kept apart from the CLI and the benchmark so both report exactly the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from router.data import RoutingData
from router.messages import Conversation
from router.metrics import domain_prior_scores, oracle_scores, random_scores, routing_metrics
from router.scoring import Router


def baseline_scores(train: RoutingData | None, test: RoutingData) -> dict[str, np.ndarray]:
    """Random, subject prior (when the test domains were seen in training) and oracle."""
    out = {"random": random_scores(len(test))}
    if train is not None and set(np.unique(test.domains)) <= set(np.unique(train.domains)):
        out["subject prior"] = domain_prior_scores(train.domains, train.cheap_correct, train.strong_correct, test.domains)
    out["oracle"] = oracle_scores(test.cheap_correct, test.strong_correct)
    return out


def evaluate_router(router: Router, test: RoutingData, train: RoutingData | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics for the router and baselines on ``test``; also the score vectors (for plots)."""
    scores = {"router": np.asarray(router.score_many(test.prompts))}
    scores.update(baseline_scores(train, test))
    metrics = {name: routing_metrics(s, test.cheap_correct, test.strong_correct) for name, s in scores.items()}
    share = float(np.mean(scores["router"] >= router.threshold))
    quality = float(np.mean(np.where(scores["router"] >= router.threshold, test.strong_correct, test.cheap_correct)))
    metrics["router"].update(
        {
            "threshold": round(router.threshold, 6),
            "teacher_share_at_threshold": round(share, 4),
            "accuracy_at_threshold": round(quality, 4),
        }
    )
    return metrics, scores


def measure_latency(router: Router, conversations: Sequence[Conversation], repeat: int = 1, warmup: int = 20) -> dict:
    """Per-request scoring latency in-process (ms), p50 and p99 over ``conversations``."""
    for conv in conversations[:warmup]:
        router.score(conv)
    samples: list[float] = []
    for _ in range(repeat):
        for conv in conversations:
            t0 = time.perf_counter()
            router.score(conv)
            samples.append(time.perf_counter() - t0)
    ms = np.array(samples) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "n_requests": len(samples),
    }
