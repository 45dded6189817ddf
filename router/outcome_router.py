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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from router.confidence import QualityOperatingPoints

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
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2,
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
