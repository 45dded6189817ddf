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
from support.artifacts import edited_copy

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


def test_one_request_scoring_is_predict_proba(data):
    rows, y = data
    router = OutcomeRouter().fit(rows, y)
    batch = router.predict_proba(rows[:40])[:, 1]
    one = [router.agreement_one(r["text"], r["competence_distance"]) for r in rows[:40]]
    assert np.allclose(batch, one, atol=1e-12)
    assert 0.0 < router.agreement_one("", 0.5) < 1.0  # no known n-gram: intercept and distance only


def test_artifact_round_trip_and_edits_are_refused(data, tmp_path):
    from router.outcome_router import load_outcome_router, save_outcome_router
    from router.signed import UntrustedArtifactError

    rows, y = data
    router = OutcomeRouter().fit(rows, y)
    path = save_outcome_router(router, 0.93, tmp_path / "r.skops", {"data": "test"})
    loaded = load_outcome_router(path)
    assert loaded.threshold == 0.93 and loaded.metadata == {"data": "test"}
    assert loaded.model.agreement_one(rows[0]["text"], 0.2) == router.agreement_one(rows[0]["text"], 0.2)
    edited = edited_copy(path, tmp_path / "edited.skops", lambda schema: schema.replace(b"0.93", b"0.10"))
    with pytest.raises(UntrustedArtifactError):
        load_outcome_router(edited)


def test_train_outcomes_on_the_shipped_index_takes_distances_leave_one_out(tmp_path):
    """The outcome prompts are Banking77 train prompts, which the shipped index holds."""
    from typer.testing import CliRunner

    from router.cli import app
    from router.competence import load_competence
    from router.outcome_router import load_outcome_router

    index_path = OUTCOMES.parents[2] / "artifacts" / "tiers" / "student" / "competence.skops"
    index = load_competence(index_path).index
    texts = [json.loads(x)["text"] for x in OUTCOMES.read_text().splitlines()[:200]]
    as_is, held_out = index.distance(texts), index.distance(texts, leave_one_out=True)
    assert np.all(held_out > as_is)  # each found itself among its k nearest
    # ...and without itself it lies as far as the index's own held-out validation prompts do
    assert abs(np.median(held_out) - np.median(index.validation_distances_)) < 0.05

    out = tmp_path / "router.skops"
    result = CliRunner().invoke(app, ["train-outcomes", "--outcomes", str(OUTCOMES), "--competence", str(index_path),
                                      "--out", str(out), "--quality", "0.98"])
    assert result.exit_code == 0, result.output
    loaded = load_outcome_router(out)
    card = loaded.metadata
    assert card["n"] == 800 and card["quality_target"] == 0.98 and "out-of-fold" in card["threshold_chosen_on"]
    assert card["operating_point"]["quality"] >= 0.98
    assert card["oof_roc_auc"] > 0.6  # text + distance carry some signal (measured 0.72)
    assert loaded.threshold == card["threshold"]
