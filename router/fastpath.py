"""Single-request scoring without scikit-learn's per-call machinery.

``ComplexityRouter.predict_proba`` on one conversation costs milliseconds, nearly all of it
input validation, sparse-matrix plumbing and thread start-up in the meta-model; the maths is
a few hundred multiply-adds. ``FastScorer`` reads the fitted parameters once and evaluates
the same function with dictionary look-ups and small NumPy operations, which keeps the
gateway's hot path well under a millisecond. It holds no state of its own and is rebuilt on
load (never saved), and the tests pin it to ``predict_proba``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
from scipy.special import expit

from router.estimator import ComplexityRouter
from router.features import hand_features
from router.messages import Conversation, to_text


class _TfidfBlock:
    """One fitted ``TfidfVectorizer`` (sublinear tf, idf, l2 norm) as a look-up table."""

    def __init__(self, vectorizer, offset: int, column: int) -> None:
        if vectorizer.norm not in ("l2", None) or not vectorizer.use_idf or vectorizer.binary:
            raise ValueError("FastScorer supports l2/None-normalised idf-weighted TF-IDF only")
        self.analyzer: Callable[[str], list[str]] = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf = np.asarray(vectorizer.idf_, dtype=float)
        self.sublinear = bool(vectorizer.sublinear_tf)
        self.l2 = vectorizer.norm == "l2"
        self.offset = offset
        self.column = column  # 0: last user turn, 1: conversation

    def transform(self, text: str) -> tuple[list[int], list[float]]:
        vocab = self.vocabulary
        # Counter counts in C; only the distinct n-grams then go through the vocabulary.
        pairs = [(vocab[t], c) for t, c in Counter(self.analyzer(text)).items() if t in vocab]
        if not pairs:
            return [], []
        idx = [i for i, _ in pairs]
        tf = np.fromiter((c for _, c in pairs), dtype=float, count=len(pairs))
        if self.sublinear:
            tf = np.log(tf) + 1.0
        values = tf * self.idf[idx]
        if self.l2:
            norm = math.sqrt(float(values @ values))
            if norm > 0:
                values = values / norm
        return [i + self.offset for i in idx], values.tolist()


class FastScorer:
    """Evaluates a fitted ``ComplexityRouter`` on one conversation."""

    def __init__(self, estimator: ComplexityRouter) -> None:
        union = estimator.features_.named_steps["union"]
        self.blocks: list[_TfidfBlock] = []
        offset = 0
        for name, _, column in union.transformers_:
            if name in ("remainder",):
                continue
            fitted = union.named_transformers_[name]
            if name == "hand":
                scaler = fitted.named_steps["scale"]
                self.hand_mean = np.asarray(scaler.mean_, dtype=float)
                self.hand_scale = np.asarray(scaler.scale_, dtype=float)
                self.hand_offset = offset
                offset += len(self.hand_mean)
            else:
                self.blocks.append(_TfidfBlock(fitted, offset, int(column)))
                offset += len(fitted.vocabulary_)
        n_features, n_text = offset, estimator.n_text_features_

        # One dense matrix holds every linear map of the sparse features: logistic heads,
        # binary naive Bayes heads (log-odds), and the domain head's per-class log-likelihood.
        columns: list[np.ndarray] = []
        bias: list[float] = []
        self.kinds = estimator.head_kinds_
        for head, kind in zip(estimator.heads_, estimator.head_kinds_):
            w = np.zeros(n_features)
            if kind == "logistic":
                w[:] = head.coef_[0]
                bias.append(float(head.intercept_[0]))
            else:
                flp, clp = head.feature_log_prob_, head.class_log_prior_
                w[:n_text] = flp[1].astype(float) - flp[0].astype(float)
                bias.append(float(clp[1] - clp[0]))
            columns.append(w)
        self.n_heads = len(columns)
        self.domain_table = None
        if estimator.domain_head_ is not None:
            nb = estimator.domain_head_
            if not np.array_equal(nb.classes_, estimator.domains_):
                raise ValueError("domain head classes do not match the domain table")
            d = np.zeros((n_features, len(nb.classes_)))
            d[: estimator.n_domain_features_] = nb.feature_log_prob_.T
            columns.extend(d.T)
            bias.extend(nb.class_log_prior_.tolist())
            self.domain_table = np.asarray(estimator.domain_table_, dtype=float)
        self.weights = np.ascontiguousarray(np.column_stack(columns))
        self.bias = np.asarray(bias)
        self.hand_weights = self.weights[self.hand_offset : self.hand_offset + len(self.hand_mean)]
        self.outcomes = estimator.target == "outcomes"
        self._compile_trees(estimator.meta_)
        self.cal_coef = float(estimator.calibrator_.coef_[0, 0])
        self.cal_intercept = float(estimator.calibrator_.intercept_[0])

    def _compile_trees(self, meta) -> None:
        """Flatten the boosted trees into arrays walked level by level for all trees at once."""
        feature, threshold, left, right, leaf, value, roots = [], [], [], [], [], [], []
        start = 0
        depth = 0
        for (tree,) in meta._predictors:
            nodes = tree.nodes
            if np.any(nodes["is_categorical"]):
                raise ValueError("categorical splits are not supported by FastScorer")
            roots.append(start)
            feature.append(nodes["feature_idx"])
            threshold.append(nodes["num_threshold"])
            left.append(nodes["left"].astype(np.int64) + start)
            right.append(nodes["right"].astype(np.int64) + start)
            leaf.append(nodes["is_leaf"].astype(bool))
            value.append(nodes["value"])
            depth = max(depth, int(nodes["depth"].max()))
            start += len(nodes)
        self.t_feature = np.concatenate(feature)
        self.t_threshold = np.concatenate(threshold)
        self.t_left = np.concatenate(left)
        self.t_right = np.concatenate(right)
        self.t_leaf = np.concatenate(leaf)
        self.t_value = np.concatenate(value)
        self.t_roots = np.asarray(roots, dtype=np.int64)
        self.t_depth = depth
        self.t_baseline = float(np.ravel(meta._baseline_prediction)[0])

    def _meta_input(self, conversation: Conversation) -> np.ndarray:
        text = to_text(conversation)
        sources = (text.last_user, text.conversation)
        idx: list[int] = []
        vals: list[float] = []
        for block in self.blocks:
            i, v = block.transform(sources[block.column])
            idx.extend(i)
            vals.extend(v)
        hand = (np.asarray(hand_features(text.last_user, text.conversation, text.n_turns)) - self.hand_mean) / self.hand_scale
        z = self.bias + hand @ self.hand_weights
        if idx:
            z = z + np.asarray(vals) @ self.weights[idx]
        # Logistic heads output expit(w.x + b); binary NB heads are expit of their log-odds too.
        probs = expit(z[: self.n_heads])
        parts = [probs]
        if self.outcomes:
            parts.append(probs[1::2] - probs[0::2])
        if self.domain_table is not None:
            jll = z[self.n_heads :]
            post = np.exp(jll - jll.max())
            post /= post.sum()
            parts.append(post @ self.domain_table)
        parts.append(hand)
        return np.concatenate(parts)

    def _trees(self, x: np.ndarray) -> float:
        node = self.t_roots.copy()
        for _ in range(self.t_depth):
            leaf = self.t_leaf[node]
            if leaf.all():
                break
            go_left = x[self.t_feature[node]] <= self.t_threshold[node]
            node = np.where(leaf, node, np.where(go_left, self.t_left[node], self.t_right[node]))
        return self.t_baseline + float(self.t_value[node].sum())

    def score(self, conversation: Conversation) -> float:
        raw = self._trees(self._meta_input(conversation))
        return float(expit(self.cal_coef * raw + self.cal_intercept))
