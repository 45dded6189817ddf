"""The cascade's confidence model: P(the student's answer agrees with the teacher's), from its logprobs.

The cascade (``gateway/routing/cascade.py``) asks the student first and must decide, after
only a few tokens, whether to keep its answer or ask the teacher. The raw logprobs are not
that probability: a 6-layer student is confidently wrong on some intents, and the tokens
that carry no information (``Intent``, ``:``) pull a plain mean towards 0. So a small
calibrated model maps features of the *decision window* to P(agree):

* decision window: the answer's tokens up to and including the first one that ends a line,
  at most ``DECISION_TOKENS`` (the first line of a support answer is its intent);
* features (:func:`logprob_features`): mean, minimum and first-token logprob, the smallest
  top-1/top-2 margin (from ``top_logprobs``; without them, the sampled token's log-odds,
  which bound the margin from below),
  the window's length as a share of ``DECISION_TOKENS``, and whether the line was complete;
* model: standardisation + logistic regression (its output is a Platt-style calibrated
  probability); ``fit`` also keeps 5-fold out-of-fold probabilities of its training rows, so
  thresholds are chosen on predictions the model did not fit. Inputs are clipped to the range
  each feature had in training: a linear model must not extrapolate confidence from a value
  it never saw.

``threshold_for(quality=0.98)``: the lowest threshold (the most student answers kept) whose
cascade quality on those out-of-fold rows is at least ``quality``, where cascade quality is
the share of final answers that agree with the teacher (an escalated request gets the
teacher's answer, so it agrees by construction). ``threshold_for(student_share=0.9)`` is the
share target instead. Saved with skops on a trusted-types list plus a content digest, like
the router (``router/artifact.py``). Torch-free; ``router`` never imports ``gateway``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.signed import dump_thresholded, load_thresholded

FORMAT = "tierwise-cascade-confidence"
FORMAT_VERSION = 1
#: The most student tokens the cascade holds back before deciding.
DECISION_TOKENS = 16
FEATURE_NAMES = ("mean_logprob", "min_logprob", "first_logprob", "min_margin", "window_share", "line_complete")
# A logprob of -inf (vLLM reports it for impossible tokens) would poison the scaler.
_FLOOR = -30.0
TRUSTED_TYPES: frozenset[str] = frozenset({"router.confidence.CascadeConfidence"})


def decision_window(tokens: Sequence[Mapping[str, Any]], max_tokens: int = DECISION_TOKENS) -> tuple[list, bool]:
    """The tokens the decision reads, and whether the window is complete (a line ended or it is full).

    ``tokens``: OpenAI ``logprobs.content`` entries (``token``, ``logprob``, ``top_logprobs``).
    An incomplete window at the end of a stream is still a valid window (a short answer).
    """
    window: list = []
    for token in tokens:
        window.append(token)
        if "\n" in str(token.get("token", "")) or len(window) >= max_tokens:
            return window, True
    return window, False


def _clean(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _FLOOR
    return _FLOOR if math.isnan(x) or x < _FLOOR else min(0.0, x)


def logprob_features(tokens: Sequence[Mapping[str, Any]], max_tokens: int = DECISION_TOKENS) -> np.ndarray:
    """The feature row (``FEATURE_NAMES``) of one answer's decision window; zeros-safe for an empty one."""
    window, _ = decision_window(tokens, max_tokens)
    ended = any("\n" in str(t.get("token", "")) for t in window)
    # A window that ends on a newline token: that token says "the line is over", not the intent.
    scored = window[:-1] if ended and len(window) > 1 else window
    if not scored:
        return np.array([_FLOOR, _FLOOR, _FLOOR, 0.0, 0.0, float(ended)], dtype=np.float64)
    lps = np.array([_clean(t.get("logprob")) for t in scored])
    margins = []
    for t, lp in zip(scored, lps):
        alts = sorted((_clean(a.get("logprob")) for a in t.get("top_logprobs") or []), reverse=True)
        if len(alts) >= 2:
            margins.append(alts[0] - alts[1])
        else:  # no alternatives reported: the log-odds of the sampled token, a lower bound of the margin
            margins.append(min(-_FLOOR, lp - math.log1p(-math.exp(min(lp, -1e-9)))))
    return np.array([lps.mean(), lps.min(), lps[0], min(margins), len(window) / max_tokens, float(ended)],
                    dtype=np.float64)


class QualityOperatingPoints:
    """Thresholds on stored out-of-fold P(agree) (``validation_proba_``, ``validation_labels_``).

    Shared by the cascade's confidence model and the router on our own outcomes
    (``router/outcome_router.py``): both say P(the student's answer agrees with the teacher's).
    """

    validation_proba_: np.ndarray
    validation_labels_: np.ndarray

    def _check_fitted(self) -> None:
        if not hasattr(self, "validation_proba_"):
            raise ValueError(f"{type(self).__name__} is not fitted")

    def operating_point(self, threshold: float) -> dict:
        """Out-of-fold student share, cascade quality and accepted-set agreement at ``threshold``."""
        self._check_fitted()
        p, y = self.validation_proba_, self.validation_labels_
        accepted = p >= threshold
        wrong_kept = int(np.sum(accepted & (y == 0)))
        return {"threshold": float(threshold), "student_share": float(accepted.mean()),
                "quality": 1.0 - wrong_kept / len(y),
                "accepted_agreement": float(y[accepted].mean()) if accepted.any() else 1.0}

    def curve(self, qualities: tuple[float, ...] = (0.95, 0.97, 0.98, 0.99, 1.0),
              shares: tuple[float, ...] = (0.8, 0.9, 0.95)) -> list[dict]:
        """Operating points at several quality and student-share targets, for an artifact's card."""
        return ([self.operating_point(self.threshold_for(quality=q)) | {"target": f"quality {q}"} for q in qualities]
                + [self.operating_point(self.threshold_for(student_share=v)) | {"target": f"student_share {v}"}
                   for v in shares])

    def threshold_for(self, quality: float | None = None, *, student_share: float | None = None) -> float:
        """The lowest threshold meeting ``quality`` (cascade agreement) or keeping ``student_share`` on the student.

        Candidates are the out-of-fold probabilities themselves (and 1.0 + eps, which keeps
        nothing: quality 1 by construction), so the answer is exact on the validation rows.
        """
        self._check_fitted()
        if (quality is None) == (student_share is None):
            raise ValueError("give exactly one of quality= or student_share=")
        target = quality if quality is not None else student_share
        if not 0.0 <= float(target) <= 1.0:
            raise ValueError(f"target must be in [0, 1]; got {target}")
        p, y = self.validation_proba_, self.validation_labels_
        if student_share is not None:
            if student_share <= 0:
                return float(np.nextafter(1.0, 2.0))
            return float(np.quantile(p, 1.0 - student_share, method="lower"))
        order = np.argsort(-p)  # accepting the k most confident rows
        wrong_kept = np.concatenate([[0], np.cumsum(y[order] == 0)])
        ok = np.nonzero(1.0 - wrong_kept / len(y) >= quality)[0]
        k = int(ok.max())  # quality is non-increasing in k; k = 0 always meets it
        if k == 0:
            return float(np.nextafter(1.0, 2.0))
        threshold = float(p[order[k - 1]])
        # ties: accepting everything at this probability may keep more wrong rows than counted
        while self.operating_point(threshold)["quality"] < quality and k > 0:
            k -= 1
            threshold = float(p[order[k - 1]]) if k else float(np.nextafter(1.0, 2.0))
        return threshold


class CascadeConfidence(QualityOperatingPoints, ClassifierMixin, BaseEstimator):
    """Calibrated P(student agrees with teacher) from :func:`logprob_features` rows.

    ``fit(features, labels)``: labels 1 = the student's first line (intent) equals the teacher's.
    """

    def __init__(self, C: float = 1.0, cv: int = 5, random_state: int = 0) -> None:
        self.C = C
        self.cv = cv
        self.random_state = random_state

    def _pipeline(self) -> Pipeline:
        return Pipeline([("scale", StandardScaler()),
                         ("logit", LogisticRegression(C=self.C, max_iter=1000))])

    def fit(self, X: Any, y: Any) -> CascadeConfidence:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"features must have shape (n, {len(FEATURE_NAMES)}); got {X.shape}")
        if len(X) != len(y):
            raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
        if len(set(y.tolist())) < 2 or np.bincount(y).min() < self.cv:
            raise ValueError(f"need at least {self.cv} agreeing and {self.cv} disagreeing examples; "
                             f"got {np.bincount(y, minlength=2).tolist()}")
        oof = np.zeros(len(y))
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        for train, held in folds.split(X, y):
            fold_range = X[train].min(axis=0), X[train].max(axis=0)
            oof[held] = self._pipeline().fit(X[train], y[train]).predict_proba(np.clip(X[held], *fold_range))[:, 1]
        self.pipeline_ = self._pipeline().fit(X, y)
        # The range each feature was seen in: outside it a linear model extrapolates without any
        # evidence (measured: without the support system prompt the first token's logprob fell to
        # -1.1, never seen in training, and an unsure teacher scored 1.0), so inputs are clipped to it.
        self.feature_low_, self.feature_high_ = X.min(axis=0), X.max(axis=0)
        self.classes_ = np.array([0, 1])
        self.validation_proba_ = oof
        self.validation_labels_ = y
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if hasattr(self, "feature_low_"):  # models saved before the clipping was added have no range
            X = np.clip(X, self.feature_low_, self.feature_high_)
        return self.pipeline_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def confidence(self, tokens: Sequence[Mapping[str, Any]]) -> float:
        """P(agree) of one answer from its logprob entries: the serving path."""
        return float(self.predict_proba(logprob_features(tokens)[None, :])[0, 1])



class ConfidenceArtifact(NamedTuple):
    model: CascadeConfidence
    threshold: float
    metadata: dict


def save_confidence(model: CascadeConfidence, path: Path | str, threshold: float, metadata: dict | None = None) -> Path:
    """Write the fitted model, its serving threshold and a free-form card (JSON), signed (``router/signed.py``)."""
    model._check_fitted()
    return dump_thresholded(path, FORMAT, FORMAT_VERSION, model, threshold, metadata)


def load_confidence(path: Path | str) -> ConfidenceArtifact:
    """Load a confidence model, or raise ``UntrustedArtifactError`` / ``FileNotFoundError``."""
    return ConfidenceArtifact(*load_thresholded(path, TRUSTED_TYPES, "cascade confidence model", FORMAT,
                                                FORMAT_VERSION, CascadeConfidence))


def outcome_rows(lines: Sequence[Mapping[str, Any]], tier: str = "student",
                 label: str = "agree") -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from ``benchmarks/cascade_outcomes.py`` records (``<tier>.logprobs``, ``<label>``)."""
    X = np.array([logprob_features(r[tier]["logprobs"]) for r in lines])
    y = np.array([int(bool(r[label])) for r in lines])
    return X, y
