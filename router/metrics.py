"""RouteLLM's routing metrics: the quality/cost curve, APGR and CPT.

A router is judged on the whole curve of "share of calls sent to the strong model" versus
"quality", not at one threshold: operators pick the operating point later. Ties in the score
(e.g. every prompt of one subject under the subject prior) are resolved by their expected
value under random tie-breaking, so coarse scores are neither helped nor hurt by sort order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QualityCostCurve:
    """Quality as a function of the share of calls routed to the strong model."""

    strong_share: np.ndarray  # 0 .. 1, one point per prompt routed
    quality: np.ndarray  # accuracy of the mixed system at that share
    pgr: np.ndarray  # performance gap recovered: 0 = all cheap, 1 = all strong


def quality_cost_curve(scores: np.ndarray, cheap_correct: np.ndarray, strong_correct: np.ndarray) -> QualityCostCurve:
    """Route the highest-scored prompts to the strong model first and trace quality."""
    scores = np.asarray(scores, dtype=float)
    cheap = np.asarray(cheap_correct, dtype=float)
    strong = np.asarray(strong_correct, dtype=float)
    if not (len(scores) == len(cheap) == len(strong)) or len(scores) == 0:
        raise ValueError("scores and outcomes must be non-empty and of equal length")
    gain = strong - cheap
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gain = scores[order], gain[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores) != 0) + 1]
    sizes = np.diff(np.r_[starts, len(scores)])
    block_mean = np.add.reduceat(sorted_gain, starts) / sizes
    expected_gain = np.repeat(block_mean, sizes)
    n = len(scores)
    share = np.arange(n + 1) / n
    quality = (cheap.sum() + np.r_[0.0, np.cumsum(expected_gain)]) / n
    gap = strong.mean() - cheap.mean()
    if gap <= 0:
        raise ValueError("the strong model is not better than the cheap one on this data")
    return QualityCostCurve(share, quality, (quality - cheap.mean()) / gap)


def apgr(scores: np.ndarray, cheap_correct: np.ndarray, strong_correct: np.ndarray) -> float:
    """Average performance gap recovered: area under PGR over the strong-call share."""
    c = quality_cost_curve(scores, cheap_correct, strong_correct)
    return float(np.trapezoid(c.pgr, c.strong_share))


def cpt(scores: np.ndarray, cheap_correct: np.ndarray, strong_correct: np.ndarray, recovered: float) -> float:
    """Call-performance threshold: least share of strong calls that recovers ``recovered``
    (e.g. 0.5) of the performance gap."""
    c = quality_cost_curve(scores, cheap_correct, strong_correct)
    hit = np.flatnonzero(c.pgr >= recovered - 1e-12)
    return float(c.strong_share[hit[0]]) if len(hit) else 1.0


def routing_metrics(scores: np.ndarray, cheap_correct: np.ndarray, strong_correct: np.ndarray) -> dict[str, float]:
    """APGR, CPT(50%), CPT(80%) in one JSON-friendly dict."""
    return {
        "apgr": round(apgr(scores, cheap_correct, strong_correct), 4),
        "cpt50": round(cpt(scores, cheap_correct, strong_correct, 0.5), 4),
        "cpt80": round(cpt(scores, cheap_correct, strong_correct, 0.8), 4),
    }


def random_scores(n: int) -> np.ndarray:
    """Random routing as a constant score: the metric takes its exact expectation."""
    return np.zeros(n)


def oracle_scores(cheap_correct: np.ndarray, strong_correct: np.ndarray) -> np.ndarray:
    """Hindsight routing: strong only where it is right and the cheap model wrong."""
    return np.asarray(strong_correct, float) - np.asarray(cheap_correct, float)


def domain_prior_scores(
    train_domains: np.ndarray,
    train_cheap: np.ndarray,
    train_strong: np.ndarray,
    test_domains: np.ndarray,
) -> np.ndarray:
    """Subject-prior baseline: the train-set gain (strong minus cheap accuracy) of the
    prompt's MMLU subject. It uses the true subject label, which a live request lacks."""
    gain = np.asarray(train_strong, float) - np.asarray(train_cheap, float)
    overall = float(gain.mean())
    table = {d: float(gain[train_domains == d].mean()) for d in np.unique(train_domains)}
    return np.array([table.get(d, overall) for d in test_domains])
