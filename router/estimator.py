"""``ComplexityRouter``: a stacked scikit-learn estimator of "the cheap tier is not enough".

Why stacked and not one linear model: one TF-IDF logistic regression tops out around 0.67
APGR on MMLU, the same as knowing the subject. Several weak views do better together:

* per-model correctness heads -- "cheap model answers right" and "strong model answers
  right", each as a logistic regression (all features) and a naive Bayes model (TF-IDF);
  their difference estimates the gain of escalating, which is what the quality/cost curve
  rewards (a prompt both models fail is not worth a teacher call; a single "weak fails"
  label cannot tell those apart);
* the hand-made cues (length, numbers, code, multi-part, reasoning words, script);
* optionally a domain head -- naive Bayes recognises the domain (MMLU subject) from the
  text and looks up that domain's train-set gain and cheap failure rate. Off by default:
  on the MMLU held-out split it lowered APGR (0.680 vs 0.694); the text heads already
  carry the subject signal, and the extra prior made the meta-model overfit.

A small gradient-boosted meta-model combines the heads' *out-of-fold* outputs with the cues
(interactions such as "strong likely right but cheap unsure" are not linear), trained on the
soft target "gain of escalating"; Platt scaling then maps its output to a probability,
P(cheap answer wrong and strong answer right), without changing the ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from router.features import HAND_FEATURE_NAMES, CompactTfidfVectorizer, ConversationColumns, HandFeatures
from router.messages import Conversation

TARGETS = ("outcomes", "gap", "soft")


class ComplexityRouter(ClassifierMixin, BaseEstimator):
    """Score conversations by the probability that the cheap tier is not good enough.

    Parameters
    ----------
    target : {"outcomes", "gap", "soft"}
        Labels of the text heads. ``"outcomes"``: separate cheap-correct and strong-correct
        heads (needs ``y`` of shape ``(n, 2)``). ``"gap"``: one label "cheap wrong and strong
        right". ``"soft"``: the soft target ``(1 + strong - cheap) / 2``. A 1-D ``y`` allows
        only ``"gap"``.
    word_max_features, char_max_features, conversation_max_features : int
        Vocabulary caps; they bound model size and per-request latency.
    C : float
        Inverse L2 strength of the logistic heads.
    nb_alpha : float
        Smoothing of the naive Bayes correctness heads (``None`` drops them).
    domain_head : bool
        Add the domain head (needs ``domains`` in ``fit``). See the module docstring.
    domain_alpha : float
        Naive Bayes smoothing of the domain head.
    meta_max_iter, meta_learning_rate, meta_max_leaf_nodes, meta_min_samples_leaf
        The gradient-boosted meta-model; kept small (latency, and few meta features).
    cv : int
        Folds for the out-of-fold head outputs and for the calibration data.
    random_state : int
        Seed of the fold assignment and of the meta-model.
    """

    def __init__(
        self,
        target: str = "outcomes",
        word_max_features: int = 50_000,
        char_max_features: int = 30_000,
        conversation_max_features: int = 5_000,
        C: float = 0.2,
        nb_alpha: float | None = 0.1,
        domain_head: bool = False,
        domain_alpha: float = 0.05,
        meta_max_iter: int = 100,
        meta_learning_rate: float = 0.05,
        meta_max_leaf_nodes: int = 4,
        meta_min_samples_leaf: int = 100,
        cv: int = 5,
        random_state: int = 0,
    ) -> None:
        self.target = target
        self.word_max_features = word_max_features
        self.char_max_features = char_max_features
        self.conversation_max_features = conversation_max_features
        self.C = C
        self.nb_alpha = nb_alpha
        self.domain_head = domain_head
        self.domain_alpha = domain_alpha
        self.meta_max_iter = meta_max_iter
        self.meta_learning_rate = meta_learning_rate
        self.meta_max_leaf_nodes = meta_max_leaf_nodes
        self.meta_min_samples_leaf = meta_min_samples_leaf
        self.cv = cv
        self.random_state = random_state

    # ------------------------------------------------------------------ building blocks
    def _make_features(self) -> Pipeline:
        """Conversation -> [word TF-IDF | char TF-IDF | conversation TF-IDF | hand cues]."""
        union = ColumnTransformer(
            [
                ("word", CompactTfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                         max_features=self.word_max_features), 0),
                ("char", CompactTfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=3, sublinear_tf=True,
                                         max_features=self.char_max_features), 0),
                ("conversation", CompactTfidfVectorizer(min_df=2, sublinear_tf=True,
                                                 max_features=self.conversation_max_features), 1),
                ("hand", Pipeline([("cues", HandFeatures()), ("scale", StandardScaler())]), [0, 1, 2]),
            ],
            sparse_threshold=1.0,
        )
        return Pipeline([("columns", ConversationColumns()), ("union", union)])

    def _head_specs(self, outcomes: np.ndarray | None, label: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
        """(name, model kind, target in [0, 1]) for every correctness head."""
        if self.target == "outcomes":
            targets = [("cheap_correct", outcomes[:, 0]), ("strong_correct", outcomes[:, 1])]
        elif self.target == "soft":
            targets = [("soft_gain", (1.0 + outcomes[:, 1] - outcomes[:, 0]) / 2.0)]
        else:
            targets = [("gap", label.astype(float))]
        kinds = ["logistic"] + (["naive_bayes"] if self.nb_alpha is not None else [])
        return [(f"{kind}:{name}", kind, t) for kind in kinds for name, t in targets]

    def _fit_head(self, kind: str, Z: sp.csr_matrix, y: np.ndarray):
        if kind == "logistic":
            return _fit_soft(LogisticRegression(C=self.C, max_iter=3000), Z, y)
        return _slim_nb(_fit_soft(MultinomialNB(alpha=self.nb_alpha), Z[:, : self.n_text_features_], y))

    def _head_input(self, kind: str, Z: sp.csr_matrix) -> sp.csr_matrix:
        return Z if kind == "logistic" else Z[:, : self.n_text_features_]

    def _meta_matrix(self, head_probs: np.ndarray, domain_post: np.ndarray | None, hand: np.ndarray) -> np.ndarray:
        """Head probabilities, cheap-vs-strong differences, domain priors, hand cues."""
        cols = [head_probs]
        if self.target == "outcomes":
            cols.append(head_probs[:, 1::2] - head_probs[:, 0::2])
        if domain_post is not None:
            cols.append(domain_post @ self.domain_table_)
        cols.append(hand)
        return np.hstack(cols)

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Sequence[Conversation], y: np.ndarray, domains: Sequence[str] | None = None) -> "ComplexityRouter":
        """Fit on conversations ``X``.

        ``y``: ``(n, 2)`` cheap model correct, strong model correct (RouteLLM's format,
        preferred) or ``(n,)`` with 1 where the cheap tier was not good enough.
        ``domains``: optional domain per prompt (e.g. MMLU subject), used by the domain head
        when ``domain_head=True``; ignored otherwise.
        """
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 2:
            outcomes = y.astype(float)
            label = ((outcomes[:, 0] == 0) & (outcomes[:, 1] == 1)).astype(int)
            gain = outcomes[:, 1] - outcomes[:, 0]
        elif y.ndim == 1:
            if self.target != "gap":
                raise ValueError(f"target={self.target!r} needs y of shape (n, 2): both models' correctness")
            outcomes, label = None, y.astype(int)
            gain = label.astype(float)
        else:
            raise ValueError(f"y must have shape (n,) or (n, 2), got {y.shape}")
        X = list(X)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows, y has {len(y)}")
        if len(np.unique(label)) < 2:
            raise ValueError("y holds one class only; cannot learn a router")

        self.features_ = self._make_features()
        Z = sp.csr_matrix(self.features_.fit_transform(X))
        self.n_text_features_ = Z.shape[1] - len(HAND_FEATURE_NAMES)
        self.n_domain_features_ = len(self.features_.named_steps["union"].named_transformers_["word"].vocabulary_)
        hand = Z[:, self.n_text_features_:].toarray()
        folds = list(KFold(self.cv, shuffle=True, random_state=self.random_state).split(Z))

        specs = self._head_specs(outcomes, label)
        self.head_names_ = [name for name, _, _ in specs]
        self.head_kinds_ = [kind for _, kind, _ in specs]
        oof = np.zeros((Z.shape[0], len(specs)))
        self.heads_ = []
        for j, (_, kind, t) in enumerate(specs):
            for tr, va in folds:
                model = self._fit_head(kind, Z[tr], t[tr])
                oof[va, j] = model.predict_proba(self._head_input(kind, Z[va]))[:, 1]
            self.heads_.append(self._fit_head(kind, Z, t))

        posterior = None
        self.domain_head_ = None
        if self.domain_head and domains is not None:
            domains = np.asarray(domains).astype(str)
            self.domains_ = np.unique(domains)
            fail = 1.0 - outcomes[:, 0] if outcomes is not None else label.astype(float)
            self.domain_table_ = np.array([[gain[domains == d].mean(), fail[domains == d].mean()] for d in self.domains_])
            # Word block only: a 57-class table over every feature would dominate the artifact.
            Z_text = Z[:, : self.n_domain_features_]
            posterior = np.zeros((Z.shape[0], len(self.domains_)))
            for tr, va in folds:
                nb = MultinomialNB(alpha=self.domain_alpha).fit(Z_text[tr], domains[tr])
                posterior[np.ix_(va, np.searchsorted(self.domains_, nb.classes_))] = nb.predict_proba(Z_text[va])
            self.domain_head_ = _slim_nb(MultinomialNB(alpha=self.domain_alpha).fit(Z_text, domains))

        M = self._meta_matrix(oof, posterior, hand)
        self.meta_ = self._make_meta().fit(M, gain)
        # Platt scaling on out-of-fold meta outputs: a monotone map to a probability.
        meta_oof = np.zeros(len(gain))
        for tr, va in folds:
            meta_oof[va] = self._make_meta().fit(M[tr], gain[tr]).predict(M[va])
        self.calibrator_ = LogisticRegression(C=1e4).fit(meta_oof[:, None], label)
        train_scores = self.calibrator_.predict_proba(meta_oof[:, None])[:, 1]
        # Score quantiles of (out-of-fold) training data: threshold_for works without data.
        self.calibration_scores_ = np.quantile(train_scores, np.linspace(0, 1, 1001))
        self.classes_ = np.array([0, 1])
        return self

    def _make_meta(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.meta_max_iter,
            learning_rate=self.meta_learning_rate,
            max_leaf_nodes=self.meta_max_leaf_nodes,
            min_samples_leaf=self.meta_min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
        )

    def meta_features(self, X: Sequence[Conversation]) -> np.ndarray:
        """The meta-model's input for ``X`` (for inspection and the fast scorer's tests)."""
        check_is_fitted(self, "calibrator_")
        Z = sp.csr_matrix(self.features_.transform(list(X)))
        head_probs = np.column_stack(
            [h.predict_proba(self._head_input(k, Z))[:, 1] for h, k in zip(self.heads_, self.head_kinds_)]
        )
        posterior = None
        if self.domain_head_ is not None:
            posterior = self.domain_head_.predict_proba(Z[:, : self.n_domain_features_])
        return self._meta_matrix(head_probs, posterior, Z[:, self.n_text_features_:].toarray())

    def predict_proba(self, X: Sequence[Conversation]) -> np.ndarray:
        """``(n, 2)``; column 1 is P(cheap tier not good enough)."""
        check_is_fitted(self, "calibrator_")  # before touching meta_: NotFittedError, not AttributeError
        raw = self.meta_.predict(self.meta_features(X))
        p = self.calibrator_.predict_proba(raw[:, None])[:, 1]
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Sequence[Conversation], threshold: float = 0.5) -> np.ndarray:
        """1 = send to the strong tier."""
        return (self.predict_proba(X)[:, 1] >= threshold).astype(int)

    def threshold_for(self, teacher_share: float, X: Sequence[Conversation] | None = None) -> float:
        """Threshold that sends about ``teacher_share`` of traffic to the strong tier.

        Computed on ``X`` when given (calibration traffic, ideally the real request mix),
        else on the out-of-fold training score distribution stored at fit time.
        """
        check_is_fitted(self, "calibrator_")
        scores = self.predict_proba(X)[:, 1] if X is not None else self.calibration_scores_
        return threshold_for(scores, teacher_share)


def _fit_soft(model, X, y: np.ndarray):
    """Fit a classifier on a target in [0, 1]; a soft target is fitted as two weighted
    copies of the data (label 1 with weight y, label 0 with weight 1 - y)."""
    y = np.asarray(y, dtype=float)
    if np.all((y == 0) | (y == 1)):
        return model.fit(X, y.astype(int))
    n = X.shape[0]
    X2 = sp.vstack([X, X]).tocsr()
    return model.fit(X2, np.r_[np.ones(n, int), np.zeros(n, int)], sample_weight=np.r_[y, 1.0 - y])


def _slim_nb(model: MultinomialNB) -> MultinomialNB:
    """Keep only what prediction needs, in float32: the counts double the artifact size."""
    model.feature_log_prob_ = model.feature_log_prob_.astype(np.float32)
    model.feature_count_ = None
    return model


def threshold_for(scores: np.ndarray, teacher_share: float) -> float:
    """Threshold ``t`` whose share ``mean(scores >= t)`` is closest to ``teacher_share``.

    Candidates are the observed scores themselves, so tied scores (the boosted meta-model
    is piecewise constant) cannot push the realised share past the target unnoticed; on a
    tie between candidates the smaller teacher share wins ("at most X % to the teacher").
    """
    if not 0.0 <= teacher_share <= 1.0:
        raise ValueError(f"teacher_share must be in [0, 1], got {teacher_share}")
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("no scores to choose a threshold from")
    candidates = np.unique(scores)  # ascending
    shares = 1.0 - np.searchsorted(np.sort(scores), candidates, side="left") / scores.size
    # Also allow "nobody": a threshold just above the highest score.
    candidates = np.r_[candidates, np.nextafter(candidates[-1], np.inf)]
    shares = np.r_[shares, 0.0]
    gap = np.abs(shares - teacher_share)
    best = np.flatnonzero(gap <= gap.min() + 1e-12)
    return float(candidates[best[np.argmin(shares[best])]])
