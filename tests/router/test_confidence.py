"""The cascade's confidence model (router/confidence.py): features, contract, thresholds, artifact."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from router import UntrustedArtifactError
from router.confidence import (DECISION_TOKENS, FEATURE_NAMES, CascadeConfidence, decision_window,
                               load_confidence, logprob_features, outcome_rows, save_confidence)
from support.artifacts import edited_copy

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = REPO / "benchmarks" / "results" / "cascade_outcomes_validation.jsonl"
SHIPPED = REPO / "artifacts" / "router" / "cascade_confidence.skops"


def answer(label_logprobs: list[float], newline: bool = True) -> list[dict]:
    """Logprob entries shaped like vLLM's: ``Intent: <label tokens>\\n``."""
    tokens = [{"token": "Intent", "logprob": -0.001}, {"token": ":", "logprob": -0.0005}]
    tokens += [{"token": f" l{i}", "logprob": lp, "top_logprobs": [{"token": f" l{i}", "logprob": lp},
                                                                    {"token": " x", "logprob": lp - 1.0}]}
               for i, lp in enumerate(label_logprobs)]
    if newline:
        tokens.append({"token": "\n", "logprob": -0.01})
    return tokens + [{"token": "Reply", "logprob": -3.0}]


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Answers whose label-token confidence predicts agreement (noisily), as the student's does."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.85
    X = np.array([logprob_features(answer(list(-rng.exponential(0.05 if agree else 1.2, size=rng.integers(1, 6)))))
                  for agree in y])
    return X, y.astype(int)


def test_decision_window_stops_at_the_first_line_or_n_tokens():
    window, complete = decision_window(answer([-0.1, -0.2]))
    assert [t["token"] for t in window] == ["Intent", ":", " l0", " l1", "\n"] and complete
    long = [{"token": "a", "logprob": -0.1}] * 40
    assert len(decision_window(long)[0]) == DECISION_TOKENS and decision_window(long)[1]
    assert decision_window(long[:3]) == (long[:3], False)  # a stream that ended early


def test_features_read_the_window_not_what_follows():
    f = dict(zip(FEATURE_NAMES, logprob_features(answer([-0.1, -2.0]))))
    assert f["min_logprob"] == pytest.approx(-2.0)  # "Reply" (-3.0) is after the newline: not read
    assert f["first_logprob"] == pytest.approx(-0.001)
    assert f["min_margin"] == pytest.approx(1.0)
    assert f["line_complete"] == 1.0 and f["window_share"] == pytest.approx(5 / DECISION_TOKENS)
    assert np.isfinite(logprob_features([])).all()
    assert np.isfinite(logprob_features([{"token": "a", "logprob": float("-inf")}])).all()


def test_estimator_contract_and_calibration():
    X, y = synthetic(600)
    model = CascadeConfidence().fit(X, y)
    p = model.predict_proba(X)
    assert p.shape == (600, 2) and np.allclose(p.sum(axis=1), 1.0)
    assert clone(model).get_params() == model.get_params()
    Xt, yt = synthetic(400, seed=1)
    pt = model.predict_proba(Xt)[:, 1]
    assert roc_auc_score(yt, pt) > 0.85
    assert abs(pt.mean() - yt.mean()) < 0.05  # calibrated on average
    with pytest.raises(ValueError):
        CascadeConfidence().fit(X[:, :3], y)
    with pytest.raises(ValueError):
        CascadeConfidence().fit(X, np.ones_like(y))  # one class: nothing to learn


def test_threshold_for_quality_is_the_lowest_meeting_the_target():
    X, y = synthetic(600)
    model = CascadeConfidence().fit(X, y)
    for quality in (0.9, 0.95, 0.98, 0.99):
        t = model.threshold_for(quality=quality)
        point = model.operating_point(t)
        assert point["quality"] >= quality
        below = model.validation_proba_[model.validation_proba_ < t]
        if len(below):  # one step lower (accepting the next row) would miss the target
            assert model.operating_point(float(below.max()))["quality"] < quality
    shares = [model.operating_point(model.threshold_for(quality=q))["student_share"] for q in (0.9, 0.98, 1.0)]
    assert shares == sorted(shares, reverse=True)
    assert model.operating_point(model.threshold_for(student_share=0.7))["student_share"] == pytest.approx(0.7, abs=0.01)
    assert model.operating_point(model.threshold_for(quality=1.0))["quality"] == 1.0
    with pytest.raises(ValueError):
        model.threshold_for()
    with pytest.raises(ValueError):
        model.threshold_for(quality=0.9, student_share=0.5)


def test_save_load_round_trip_and_refusals(tmp_path):
    X, y = synthetic(300)
    model = CascadeConfidence().fit(X, y)
    path = save_confidence(model, tmp_path / "c.skops", 0.7, {"data": "synthetic"})
    loaded = load_confidence(path)
    assert loaded.threshold == 0.7 and loaded.metadata == {"data": "synthetic"}
    assert np.allclose(loaded.model.predict_proba(X), model.predict_proba(X))
    # an edited file
    edited = edited_copy(path, tmp_path / "edited.skops", lambda schema: schema.replace(b"0.7", b"0.1"))
    with pytest.raises(UntrustedArtifactError):
        load_confidence(edited)
    pickled = tmp_path / "p.skops"
    pickled.write_bytes(pickle.dumps(model))
    with pytest.raises(UntrustedArtifactError):
        load_confidence(pickled)
    with pytest.raises(UntrustedArtifactError):  # a router artifact is not a confidence model
        load_confidence(REPO / "artifacts" / "router" / "mmlu_router.skops")
    with pytest.raises(FileNotFoundError):
        load_confidence(tmp_path / "missing.skops")


def test_real_outcomes_predict_agreement_out_of_fold():
    """On the real vLLM student/teacher outcomes (Banking77 train carve), logprobs carry the signal."""
    lines = [json.loads(x) for x in OUTCOMES.read_text().splitlines() if x.strip()]
    X, y = outcome_rows(lines)
    assert len(y) >= 300 and 0 < y.mean() < 1
    model = CascadeConfidence().fit(X, y)
    assert roc_auc_score(y, model.validation_proba_) > 0.7
    t = model.threshold_for(quality=0.98)
    assert model.operating_point(t)["quality"] >= 0.98


def test_shipped_artifact_loads_with_its_card():
    loaded = load_confidence(SHIPPED)
    assert 0.0 <= loaded.threshold <= 1.0
    card = loaded.metadata
    assert "train" in card["data"].lower() and "optimistic" in card["caveat"]
    assert card["operating_point"]["quality"] >= card["quality_target"]


def test_band_check_calibration_keeps_its_share_of_in_scope_teacher_answers(tmp_path):
    """`calibrate-cascade --tier teacher --label teacher_correct --keep 0.95`: the competence band's check,
    fitted on the real teacher's answers (with logprobs) to Banking77 train prompts only."""
    from typer.testing import CliRunner

    from router.cli import app

    teacher_outcomes = OUTCOMES.with_name("teacher_outcomes_validation.jsonl")
    out = tmp_path / "band_check.skops"
    result = CliRunner().invoke(app, ["calibrate-cascade", "--outcomes", str(teacher_outcomes), "--out", str(out),
                                      "--tier", "teacher", "--label", "teacher_correct", "--keep", "0.95"])
    assert result.exit_code == 0, result.output
    loaded = load_confidence(out)
    card = loaded.metadata
    assert card["tier"] == "teacher" and card["label"] == "teacher_correct" and card["keep_target"] == 0.95
    assert card["quality_target"] is None and "95%" in card["threshold_chosen_on"]
    assert card["operating_point"]["student_share"] >= 0.95  # share of in-scope answers kept on the teacher
    assert card["oof_roc_auc"] > 0.8
    shipped = load_confidence(SHIPPED.with_name("band_check.skops"))
    assert shipped.metadata["tier"] == "teacher" and shipped.threshold == pytest.approx(loaded.threshold)


def test_features_outside_the_training_range_are_clipped_not_extrapolated():
    """Without the support system prompt the teacher's first token fell to logprob -1.1, a value never
    seen in training; the linear model then scored an unsure answer 1.0. Inputs are clipped."""
    lines = [json.loads(x) for x in OUTCOMES.read_text().splitlines() if x.strip()]
    X, y = outcome_rows(lines)
    model = CascadeConfidence().fit(X, y)
    row = X[0].copy()
    row[FEATURE_NAMES.index("first_logprob")] = -25.0  # far below anything seen
    clipped = np.clip(row, model.feature_low_, model.feature_high_)
    assert model.predict_proba(row[None, :])[0, 1] == pytest.approx(model.predict_proba(clipped[None, :])[0, 1])
    assert np.all(model.feature_low_ <= X.min(axis=0)) and np.all(model.feature_high_ >= X.max(axis=0))
