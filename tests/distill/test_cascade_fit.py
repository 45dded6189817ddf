"""``distill cascade`` (issue #13): a student's cascade fitted on validation and gated on test,
with the real shipped support student on Banking77 messages (gold intents as the reference)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from distill.banking77_chat import write_banking77
from distill.cascade_fit import fit_cascade
from router.confidence import load_confidence
from support.processes import REPO, model_cache
from support.shared_data import shared_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def banking_halves(tmp_path_factory):
    """Validation and test of 300 records each, both drawn from Banking77's test messages (the
    shipped student trained on the train split, so its validation split would flatter it)."""
    tmp = tmp_path_factory.mktemp("cascade-data")
    write_banking77(shared_data("banking77"), tmp / "all")
    lines = (tmp / "all" / "test.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    out = tmp / "halves"
    out.mkdir()
    (out / "validation.jsonl").write_text("\n".join(lines[:300]) + "\n")
    (out / "test.jsonl").write_text("\n".join(lines[300:600]) + "\n")
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    src = model_cache() / "student"
    if not (src / "config.json").is_file():
        pytest.fail(f"no assembled student in {model_cache()} (run `make setup`)")
    import shutil

    dst = tmp_path_factory.mktemp("student") / "model"
    shutil.copytree(src, dst)
    return dst


def test_the_shipped_student_behind_its_cascade(student, banking_halves):
    fit = fit_cascade(student, banking_halves, quality=0.97, min_share=0.2, margin=0.01)
    assert fit.metric == "first_line" and fit.threshold is not None
    v, t = fit.validation, fit.test
    # the threshold met quality + margin on validation's out-of-fold predictions, not on test
    assert v["quality"] >= 0.98 and 0 < v["student_share"] < 1
    # test is measured consistently: escalations agree, kept answers agree at kept_agreement
    kept = round(t["share_kept"] * t["n"])
    assert t["routed_quality"] == pytest.approx(1 - kept * (1 - t["kept_agreement"]) / t["n"])
    assert t["routed_quality"] > t["student_agreement"]  # the cascade escalates the student's mistakes first
    # the real student's confidence separates its mistakes (measured 83 % kept at 97.3 % on 400 + 400)
    assert t["share_kept"] >= 0.5 and t["routed_quality"] >= 0.95
    assert fit.passes == (t["routed_quality"] >= 0.97 and t["share_kept"] >= 0.2)
    if fit.passes:
        loaded = load_confidence(fit.artifact)
        assert loaded.threshold == pytest.approx(fit.threshold)
        assert loaded.metadata["threshold_chosen_on"].startswith("validation")
        assert np.isfinite(loaded.model.validation_proba_).all()
    else:
        assert fit.artifact is None and fit.why


def test_free_text_workloads_get_no_cascade_and_the_cli_says_why(student, tmp_path):
    rec = {"messages": [{"role": "user", "content": "Tell me about the sea."},
                        {"role": "assistant", "content": "The sea is large, salty and full of life; " * 3}]}
    for split in ("validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(rec) for _ in range(12)) + "\n")
    fit = fit_cascade(student, tmp_path)
    assert not fit.passes and fit.artifact is None and "free-text" in fit.why
    done = subprocess.run([sys.executable, "-m", "distill", "cascade", "--model", str(student), "--data",
                           str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "no validation.jsonl" in done.stdout + done.stderr


def test_answers_keep_the_cascades_whole_decision_window():
    from distill.cascade_fit import WINDOW_TOKENS
    from router.confidence import DECISION_TOKENS

    assert WINDOW_TOKENS == DECISION_TOKENS
