"""The student's competence index (router/competence.py) on real data: Banking77 in scope,
HWU64 out of scope (evaluation only, never fitted on)."""

from __future__ import annotations

import csv
import pickle
import random
import time

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from router import UntrustedArtifactError
from router.competence import CompetenceIndex, competence_text, load_competence, save_competence
from support.artifacts import edited_copy
from support.shared_data import shared_data

SYSTEM = "You are a bank's customer-support assistant."


def texts(*parts: str, n: int, seed: int = 0) -> list[str]:
    with open(shared_data(*parts), newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return random.Random(seed).sample(rows, n)


@pytest.fixture(scope="module")
def train() -> list[str]:
    return texts("banking77", "train.csv", n=3000)


@pytest.fixture(scope="module")
def index(train: list[str]) -> CompetenceIndex:
    return CompetenceIndex(known_prompts=(SYSTEM,)).fit(train)


def test_estimator_contract(train, index):
    fresh = CompetenceIndex(features="word", k=3, known_prompts=(SYSTEM,))
    assert clone(fresh).get_params() == fresh.get_params()
    assert not hasattr(fresh, "threshold_")
    with pytest.raises(ValueError, match="not fitted"):
        fresh.distance(["hello"])
    assert fresh.fit(train[:200]) is fresh
    learned = set(vars(fresh)) - set(fresh.get_params())
    assert learned and all(name.endswith("_") or name.startswith("_") for name in learned), learned
    for bad in (dict(features="bert"), dict(k=0), dict(target_acceptance=1.5), dict(validation_fraction=0)):
        with pytest.raises(ValueError):
            CompetenceIndex(**bad).fit(train[:200])
    with pytest.raises(ValueError, match="too few"):
        CompetenceIndex(k=5).fit(train[:12])
    d = index.distance(["I still haven't received my new card", "What's the weather in Paris tomorrow?"])
    np.testing.assert_allclose(index.score_samples(["What's the weather in Paris tomorrow?"]), -d[1:])
    np.testing.assert_allclose(index.decision_function(["I still haven't received my new card"]),
                               index.threshold_ - d[:1])
    assert list(index.predict(["I still haven't received my new card", "What's the weather in Paris tomorrow?"])) \
        == [1, -1]


def test_fast_path_matches_batch_scoring(index):
    sample = texts("banking77", "test.csv", n=100) + texts("hwu64", "test.csv", n=100) + ["", "zzzz qqqq"]
    batch = index.distance(sample)
    one = np.array([index.distance_one([{"role": "user", "content": t}]) for t in sample])
    np.testing.assert_allclose(one, batch, atol=1e-5)
    assert ((0 <= batch) & (batch <= 1)).all()
    assert index.distance_one("") == 1.0  # nothing the student has seen


def test_routing_text_is_system_and_user_turns_without_the_known_prompt(index):
    ask = "I still haven't received my new card"
    assert competence_text([{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}], (SYSTEM,)) == ask
    assert index.distance_one([{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask},
                               {"role": "assistant", "content": "Intent: card_arrival"}]) \
        == pytest.approx(index.distance_one(ask))
    coding = [{"role": "system", "content": "You are a Python tutor. Answer with code only."},
              {"role": "user", "content": ask}]
    assert index.distance_one(coding) > index.distance_one(ask)  # an unknown system prompt counts
    parts = [{"role": "user", "content": [{"type": "text", "text": ask}, {"type": "image_url", "image_url": {}}]}]
    assert index.distance_one(parts) == pytest.approx(index.distance_one(ask))


def test_huge_prompts_are_capped(index):
    huge = "my card payment was declined " * 40_000  # 1.2 MB
    assert len(competence_text(huge, max_chars=index.max_chars)) <= index.max_chars + 1
    index.distance_one("warm up")
    t0 = time.perf_counter()
    index.distance_one([{"role": "user", "content": huge}])
    assert time.perf_counter() - t0 < 0.25  # the cap makes it cost what a 2,000-character prompt costs


def test_threshold_is_chosen_on_held_out_training_prompts(train, index):
    assert len(index.validation_distances_) == 300  # 10 % of the 3,000 training prompts
    assert index.threshold_ == index.threshold_for(0.95)
    assert index.validation_acceptance() >= 0.95
    assert index.threshold_for(0.90) <= index.threshold_for(0.95) <= index.threshold_for(0.99)
    # It generalises to unseen in-scope prompts (Banking77 test), within a few points.
    accepted = np.mean(index.distance(texts("banking77", "test.csv", n=500)) <= index.threshold_)
    assert 0.90 <= accepted <= 1.0


def test_separates_banking77_from_hwu64(index):
    in_scope = index.distance(texts("banking77", "test.csv", n=400))
    out_scope = index.distance(texts("hwu64", "test.csv", n=400))
    auc = roc_auc_score(np.r_[np.zeros(400), np.ones(400)], np.r_[in_scope, out_scope])
    assert auc > 0.9, auc
    assert index.distance_one("What's the weather in Paris tomorrow?") > index.threshold_
    assert index.distance_one("I still haven't received my new card") <= index.threshold_


def test_save_load_round_trip_and_refusals(index, tmp_path):
    path = save_competence(index, tmp_path / "competence.skops", {"fitted_on": "banking77/train.csv"})
    loaded = load_competence(path)
    assert loaded.metadata == {"fitted_on": "banking77/train.csv"}
    assert loaded.index.threshold_ == index.threshold_
    probe = texts("hwu64", "test.csv", n=50, seed=1)
    np.testing.assert_array_equal(loaded.index.distance(probe), index.distance(probe))

    edited = edited_copy(path, tmp_path / "edited.skops", lambda schema: schema.replace(b'"k"', b'"k" ', 1))
    with pytest.raises(UntrustedArtifactError, match="changed after it was written"):
        load_competence(edited)

    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps(index))
    with pytest.raises(UntrustedArtifactError):
        load_competence(pickled)
    with pytest.raises(FileNotFoundError):
        load_competence(tmp_path / "missing.skops")


def test_a_router_artifact_is_not_a_competence_index(tmp_path):
    from router.defaults import DEFAULT_ARTIFACT

    with pytest.raises(UntrustedArtifactError, match="trusted list"):
        load_competence(DEFAULT_ARTIFACT)
