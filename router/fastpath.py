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

from router.estimator import ComplexityRouter
from router.features import hand_features
from router.messages import Conversation, to_text


class _TfidfBlock:
    """One fitted ``TfidfVectorizer`` (sublinear tf, idf, l2 norm) as a look-up table.

    Plain Python floats, not NumPy: a request has tens to a few hundred distinct n-grams,
    where each NumPy call's fixed cost (~1 us) outweighs the arithmetic it saves.
    """

    def __init__(self, vectorizer, offset: int, column: int) -> None:
        if vectorizer.norm not in ("l2", None) or not vectorizer.use_idf or vectorizer.binary:
            raise ValueError("FastScorer supports l2/None-normalised idf-weighted TF-IDF only")
        self.analyzer: Callable[[str], list[str]] = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf = np.asarray(vectorizer.idf_, dtype=float)
        self._idf = self.idf.tolist()
        self.sublinear = bool(vectorizer.sublinear_tf)
        self.l2 = vectorizer.norm == "l2"
        self.offset = offset
        self.column = column  # 0: last user turn, 1: conversation

    def transform(self, text: str) -> tuple[list[int], list[float]]:
        """The text's non-zero features: column indices (offset applied) and TF-IDF values."""
        idf, log, offset = self._idf, math.log, self.offset
        # Look-ups and counting run in C (map, Counter); one Python pass per distinct feature.
        counts = Counter([j for j in map(self.vocabulary.get, self.analyzer(text)) if j is not None])
        idx = [j + offset for j in counts]
        if self.sublinear:  # log(1) + 1 == 1 exactly: most n-grams occur once
            values = [((log(c) + 1.0) if c > 1 else 1.0) * idf[j] for j, c in counts.items()]
        else:
            values = [c * idf[j] for j, c in counts.items()]
        if self.l2 and values:
            norm = math.sqrt(math.fsum(v * v for v in values))
            if norm > 0:
                values = [v / norm for v in values]
        return idx, values


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
        self._hand_mean, self._hand_scale = self.hand_mean.tolist(), self.hand_scale.tolist()
        self.outcomes = estimator.target == "outcomes"
        self._compile_trees(estimator.meta_)
        self.cal_coef = float(estimator.calibrator_.coef_[0, 0])
        self.cal_intercept = float(estimator.calibrator_.intercept_[0])

    def _compile_trees(self, meta) -> None:
        """Turn the boosted trees into one generated Python function of the meta-features.

        A hundred shallow trees walked with NumPy cost ~25 array operations of fixed overhead;
        as straight-line ``if x[f] <= t`` code they cost a few hundred comparisons. The source
        holds only numbers read from the fitted trees (cast with ``int``/``float``), so no text
        from the artifact reaches ``exec``.
        """
        lines = ["def trees(x):", "    s = 0.0"]

        def emit(nodes, i: int, indent: str) -> None:
            node = nodes[i]
            if node["is_leaf"]:
                lines.append(f"{indent}s += {float(node['value'])!r}")
                return
            if node["is_categorical"]:
                raise ValueError("categorical splits are not supported by FastScorer")
            lines.append(f"{indent}if x[{int(node['feature_idx'])}] <= {float(node['num_threshold'])!r}:")
            emit(nodes, int(node["left"]), indent + "    ")
            lines.append(f"{indent}else:")
            emit(nodes, int(node["right"]), indent + "    ")

        for (tree,) in meta._predictors:
            emit(tree.nodes, 0, "    ")
        lines.append("    return s")
        namespace: dict = {}
        exec(compile("\n".join(lines), "<router trees>", "exec"), namespace)  # noqa: S102 - numbers only, see above
        self._tree_sum = namespace["trees"]
        self.t_baseline = float(np.ravel(meta._baseline_prediction)[0])

    def _meta_input(self, conversation: Conversation) -> list[float]:
        text = to_text(conversation)
        sources = (text.last_user, text.conversation)
        idx: list[int] = []
        vals: list[float] = []
        for block in self.blocks:
            i, v = block.transform(sources[block.column])
            idx += i
            vals += v
        hand = [(x - m) / s for x, m, s in zip(hand_features(text.last_user, text.conversation, text.n_turns),
                                               self._hand_mean, self._hand_scale)]
        z = self.bias + np.dot(hand, self.hand_weights)
        if idx:
            z += np.dot(vals, self.weights[idx])
        z = z.tolist()
        # Logistic heads output expit(w.x + b); binary NB heads are expit of their log-odds too.
        probs = [_expit(v) for v in z[: self.n_heads]]
        out = list(probs)
        if self.outcomes:
            out += [b - a for a, b in zip(probs[0::2], probs[1::2])]
        if self.domain_table is not None:
            jll = z[self.n_heads :]
            top = max(jll)
            post = [math.exp(v - top) for v in jll]
            total = math.fsum(post)
            out += np.dot([p / total for p in post], self.domain_table).tolist()
        out += hand
        return out

    def _trees(self, x: list[float]) -> float:
        return self.t_baseline + self._tree_sum(x)

    def score(self, conversation: Conversation) -> float:
        return _expit(self.cal_coef * self._trees(self._meta_input(conversation)) + self.cal_intercept)


def _expit(v: float) -> float:
    """The logistic function, without overflow for large negative inputs."""
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)
