"""The router on our own tiers' outcomes (router/outcome_router.py), on the real outcomes file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from router.confidence import CascadeConfidence, outcome_rows
from router.outcome_router import OutcomeRouter

OUTCOMES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cascade_outcomes_validation.jsonl"


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], np.ndarray]:
    lines = [json.loads(x) for x in OUTCOMES.read_text().splitlines() if x.strip()]
    X, y = outcome_rows(lines)
    confidence = CascadeConfidence().fit(X, y).validation_proba_
    # a cheap stand-in for the competence distance that the test can compute without fitting an
    # index: length in words (the benchmark uses the real index; here the contract is under test)
    rows = [{"text": r["text"], "competence_distance": len(r["text"].split()) / 50, "confidence": c}
            for r, c in zip(lines, confidence)]
    return rows, y


def test_contract_and_out_of_fold_thresholds(data):
    rows, y = data
    router = OutcomeRouter(use_confidence=True).fit(rows, y)
    p = router.predict_proba(rows[:10])
    assert p.shape == (10, 2) and np.allclose(p.sum(axis=1), 1)
    assert clone(router).get_params() == router.get_params()
    assert roc_auc_score(y, router.validation_proba_) > 0.7  # the confidence feature carries it
    t = router.threshold_for(quality=0.98)
    assert router.operating_point(t)["quality"] >= 0.98
    with pytest.raises(ValueError):
        OutcomeRouter(use_confidence=True).fit([{"text": "x", "competence_distance": 0.1}] * 20, [0, 1] * 10)
