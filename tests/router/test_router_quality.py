"""The router, fitted on a small real MMLU sample, must route better than chance."""

from __future__ import annotations

import numpy as np
import pytest

from router import ComplexityRouter, Router, threshold_for
from router.metrics import apgr, cpt, oracle_scores, random_scores, routing_metrics


def test_beats_random_on_heldout(fitted: ComplexityRouter, sample) -> None:
    scores = fitted.predict_proba(sample.test.prompts)[:, 1]
    test = sample.test
    ours = routing_metrics(scores, test.cheap_correct, test.strong_correct)
    rand = routing_metrics(random_scores(len(test)), test.cheap_correct, test.strong_correct)
    assert ours["apgr"] > rand["apgr"] + 0.04, (ours, rand)
    assert ours["cpt50"] < rand["cpt50"], (ours, rand)


def test_scores_are_probabilities(fitted: ComplexityRouter, sample) -> None:
    proba = fitted.predict_proba(sample.test.prompts[:200])
    assert proba.shape == (200, 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Calibrated: mean predicted P(gap) is close to the held-out gap rate.
    gap_rate = np.mean(~sample.test.cheap_correct & sample.test.strong_correct)
    assert abs(fitted.predict_proba(sample.test.prompts)[:, 1].mean() - gap_rate) < 0.05


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5])
def test_threshold_for_hits_target_share_on_calibration_data(fitted: ComplexityRouter, sample, share: float) -> None:
    X = sample.test.prompts[:1000]
    t = fitted.threshold_for(share, X)
    realised = np.mean(fitted.predict_proba(X)[:, 1] >= t)
    assert abs(realised - share) <= 0.01


def test_stored_threshold_generalises_to_new_prompts(fitted: ComplexityRouter, sample) -> None:
    """Without calibration data the threshold comes from out-of-fold training scores; it
    must still send about the requested share of unseen prompts to the teacher."""
    t = fitted.threshold_for(0.3)
    realised = np.mean(fitted.predict_proba(sample.test.prompts)[:, 1] >= t)
    assert abs(realised - 0.3) <= 0.06


def test_threshold_for_edges() -> None:
    scores = np.random.RandomState(0).rand(1000)
    assert np.mean(scores >= threshold_for(scores, 0.0)) == 0.0
    assert np.mean(scores >= threshold_for(scores, 1.0)) == 1.0
    with pytest.raises(ValueError):
        threshold_for(scores, 1.5)


def test_labels_hard_and_soft_both_train(sample) -> None:
    """The issue's two label choices (hard gap label, soft target) fit and score."""
    small = dict(word_max_features=3000, char_max_features=3000, conversation_max_features=500, cv=3, meta_max_iter=30)
    train, test = sample.train, sample.test
    gap_label = (~train.cheap_correct & train.strong_correct).astype(int)
    hard = ComplexityRouter(target="gap", **small).fit(train.prompts[:1500], gap_label[:1500])
    soft = ComplexityRouter(target="soft", **small).fit(train.prompts[:1500], train.outcomes[:1500])
    for est in (hard, soft):
        s = est.predict_proba(test.prompts)[:, 1]
        assert apgr(s, test.cheap_correct, test.strong_correct) > 0.5
        # These have no domain head (the default): the fast path must agree here too.
        fast = Router(estimator=est, threshold=0.5)
        np.testing.assert_allclose([fast.score(p) for p in test.prompts[:100]], s[:100], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="needs y of shape"):
        ComplexityRouter(target="soft").fit(train.prompts[:50], gap_label[:50])


def test_metrics_baselines_on_real_outcomes(sample) -> None:
    t = sample.test
    assert apgr(random_scores(len(t)), t.cheap_correct, t.strong_correct) == pytest.approx(0.5)
    assert cpt(random_scores(len(t)), t.cheap_correct, t.strong_correct, 0.5) == pytest.approx(0.5, abs=1e-3)
    oracle = oracle_scores(t.cheap_correct, t.strong_correct)
    assert apgr(oracle, t.cheap_correct, t.strong_correct) > 1.0
    # Anti-oracle is worse than random: the metric rewards ranking, not the score's scale.
    assert apgr(-oracle, t.cheap_correct, t.strong_correct) < 0.5


def test_router_wrapper_decision_matches_threshold(fitted: ComplexityRouter, sample) -> None:
    router = Router(estimator=fitted, threshold=fitted.threshold_for(0.3))
    for prompt in sample.test.prompts[:50]:
        msgs = [{"role": "user", "content": prompt}]
        assert router.use_teacher(msgs) == (router.score(msgs) >= router.threshold)
