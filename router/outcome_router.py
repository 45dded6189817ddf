"""A router trained on our own tiers' outcomes: P(the student's answer agrees with the teacher's).

The shipped support router learned from MMLU outcomes of other models plus Banking77 test
outcomes; issue #12 retires that. This one learns from what *our* student and teacher did on
a validation carve of the workload's training split (``benchmarks/cascade_outcomes.py``):

* ``text``: char 3-5-gram TF-IDF of the customer message (what the request is about);
* ``competence_distance``: the student's competence index distance (how far from what it was taught);
* ``confidence`` (optional, ``use_confidence=True``): the cascade's P(agree) from the student's
  first-line logprobs, only known once the student has started answering (a cascade-time router).

Logistic regression over the stacked features gives a calibrated P(agree); ``fit`` keeps
5-fold out-of-fold probabilities, so ``threshold_for(quality=0.98)`` / ``threshold_for(student_share=...)``
(from :class:`router.confidence.QualityOperatingPoints`) are chosen on predictions the model
did not fit. Requests below the threshold go to the teacher. Torch-free; no ``gateway`` import.

The gateway scores one request at a time (``agreement_one``): the fitted TF-IDF as a look-up
table and one dot product, no scikit-learn call on the request path (``router/fastpath.py``'s
approach; the tests pin it to ``predict_proba``). Saved with skops on a trusted-types list
plus a content digest (``save_outcome_router`` / ``load_outcome_router``), with the sha256 of
the competence index whose distances it learned from, so the gateway can refuse a mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from router.confidence import QualityOperatingPoints
from router.fastpath import _TfidfBlock
from router.features import CompactTfidfVectorizer
from router.signed import dump_thresholded, load_thresholded

FORMAT = "tierwise-outcome-router"
FORMAT_VERSION = 1
TRUSTED_TYPES: frozenset[str] = frozenset({
    "router.outcome_router.OutcomeRouter", "router.features.CompactTfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression", "sklearn.preprocessing._data.StandardScaler",
})

Row = Mapping[str, Any]  # {"text": str, "competence_distance": float, "confidence": float (optional)}


class OutcomeRouter(QualityOperatingPoints, ClassifierMixin, BaseEstimator):
    """Calibrated P(student agrees with teacher) from text, competence distance (and confidence)."""

    def __init__(self, use_confidence: bool = False, C: float = 1.0, numeric_weight: float = 3.0, cv: int = 5,
                 max_features: int = 20_000, random_state: int = 0) -> None:
        self.use_confidence = use_confidence
        self.C = C
        self.numeric_weight = numeric_weight
        self.cv = cv
        self.max_features = max_features
        self.random_state = random_state

    def _numeric(self, X: Sequence[Row]) -> np.ndarray:
        cols = ["competence_distance"] + (["confidence"] if self.use_confidence else [])
        try:
            return np.array([[float(r[c]) for c in cols] for r in X], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"every row needs {cols}; missing {exc}") from None

    def _fit_parts(self, X: Sequence[Row], y: np.ndarray) -> tuple:
        vec = CompactTfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2,
                              max_features=self.max_features)
        text = vec.fit_transform([str(r["text"]) for r in X])
        scaler = StandardScaler().fit(self._numeric(X))
        logit = LogisticRegression(C=self.C, max_iter=2000).fit(self._stack(text, scaler, X), y)
        return vec, scaler, logit

    def _stack(self, text: sp.spmatrix, scaler: StandardScaler, X: Sequence[Row]) -> sp.csr_matrix:
        numeric = scaler.transform(self._numeric(X)) * self.numeric_weight
        return sp.hstack([text, sp.csr_matrix(numeric)], format="csr")

    def fit(self, X: Sequence[Row], y: Any) -> OutcomeRouter:
        X = list(X)
        y = np.asarray(y).astype(int)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows but {len(y)} labels")
        if len(set(y.tolist())) < 2 or np.bincount(y).min() < self.cv:
            raise ValueError(f"need at least {self.cv} agreeing and {self.cv} disagreeing rows")
        oof = np.zeros(len(y))
        for train, held in StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state).split(np.zeros(len(y)), y):
            vec, scaler, logit = self._fit_parts([X[i] for i in train], y[train])
            part = [X[i] for i in held]
            oof[held] = logit.predict_proba(self._stack(vec.transform([str(r["text"]) for r in part]), scaler, part))[:, 1]
        self.vectorizer_, self.scaler_, self.logit_ = self._fit_parts(X, y)
        self.classes_ = np.array([0, 1])
        self.validation_proba_, self.validation_labels_ = oof, y
        return self

    def predict_proba(self, X: Sequence[Row]) -> np.ndarray:
        self._check_fitted()
        X = list(X)
        return self.logit_.predict_proba(self._stack(self.vectorizer_.transform([str(r["text"]) for r in X]),
                                                     self.scaler_, X))

    def predict(self, X: Sequence[Row]) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    # -- serving: one request ------------------------------------------------------------
    def agreement_one(self, text: str, competence_distance: float, confidence: float | None = None) -> float:
        """``predict_proba([row])[0, 1]`` for one request, without scikit-learn's per-call overhead."""
        self._check_fitted()
        fast = getattr(self, "_fast", None)
        if fast is None:
            fast = self._fast = _FastLinear(self)
        numeric = [competence_distance] + ([confidence] if self.use_confidence else [])
        if any(v is None for v in numeric):
            raise ValueError("use_confidence=True needs the cascade's confidence")
        return fast.proba(text, numeric)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_fast", None)  # rebuilt on first use, never saved
        return state


class _FastLinear:
    """The fitted logistic regression over TF-IDF + scaled numeric columns, for one row."""

    def __init__(self, model: OutcomeRouter) -> None:
        self.text = _TfidfBlock(model.vectorizer_, offset=0, column=0)  # the router fast path's look-up table
        coef = np.asarray(model.logit_.coef_[0], dtype=np.float64)
        n_text = len(self.text.vocabulary)
        self.text_coef = coef[:n_text]
        scale = np.asarray(model.scaler_.scale_, dtype=np.float64)
        mean = np.asarray(model.scaler_.mean_, dtype=np.float64)
        # (x - mean) / scale * weight . coef  ==  x . (coef * weight / scale) - mean . (...)
        self.numeric_coef = coef[n_text:] * model.numeric_weight / scale
        self.intercept = float(model.logit_.intercept_[0]) - float(mean @ self.numeric_coef)

    def proba(self, text: str, numeric: list[float]) -> float:
        idx, values = self.text.transform(text)
        z = self.intercept + float(np.dot(self.numeric_coef, numeric))
        if idx:
            z += float(np.dot(values, self.text_coef[idx]))
        return float(1.0 / (1.0 + math.exp(-z)))


class OutcomeRouterArtifact(NamedTuple):
    model: OutcomeRouter
    threshold: float  # P(agree) below this goes to the strong tier
    metadata: dict


def save_outcome_router(model: OutcomeRouter, threshold: float, path: Path | str, metadata: dict | None = None) -> Path:
    """Write ``model`` and its served threshold as a signed skops archive (``router/signed.py``)."""
    model._check_fitted()
    return dump_thresholded(path, FORMAT, FORMAT_VERSION, model, threshold, metadata)


def load_outcome_router(path: Path | str) -> OutcomeRouterArtifact:
    """Load an outcome-router artifact, or raise ``UntrustedArtifactError`` / ``FileNotFoundError``."""
    return OutcomeRouterArtifact(*load_thresholded(path, TRUSTED_TYPES, "outcome router", FORMAT, FORMAT_VERSION,
                                                   OutcomeRouter))
