"""The student's competence index: how far a request lies from what the student was taught.

A distilled student is a specialist. It answers anything, but only requests like its training
prompts get answers worth having; "What's the weather in Paris?" gets a banking intent. The
index is a compact model of the student's *input distribution*, fitted on its own training
prompts and nothing else (no out-of-scope examples, which nobody has for a new student):

* features: TF-IDF of word 1-2-grams and of char 3-5-grams (within word boundaries), each
  block l2-normalised and scaled by ``1/sqrt(blocks)``, so a dot product is the mean of the
  blocks' cosine similarities;
* distance: 1 - the mean cosine similarity to the ``k`` nearest training prompts (0: seen
  before, 1: shares no n-gram with anything the student saw);
* threshold: chosen on a validation split carved from the training prompts, as the distance
  that keeps ``target_acceptance`` of those held-out in-scope prompts. It needs no
  out-of-scope data, so it works for any student and data set.

It is a scikit-learn-style estimator (parameters only in ``__init__``, learned state ends in
``_``), torch-free because the gateway runs it on the request path, and saved with skops on
a trusted-types list plus a content digest (``save_competence`` / ``load_competence``), like
the router (``router/artifact.py``). ``distance_one`` is the serving path: a dictionary
look-up per n-gram and one sparse column gather, well under a millisecond for chat-sized
prompts; text is capped at ``max_chars`` so a huge prompt costs no more than a long one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse import _sparsetools
from sklearn.base import BaseEstimator

from router.signed import UntrustedArtifactError, dump_signed, load_signed
from router.features import CompactTfidfVectorizer
from router.messages import Conversation, content_text

FORMAT = "tierwise-competence"
FORMAT_VERSION = 1
FEATURE_SETS = ("word", "char", "word+char")
MIN_VALIDATION = 10  # held-out prompts needed to place a threshold at all
_CHUNK = 512  # query rows per sparse product in batch scoring: bounds memory at ~5 M floats

# Types a competence artifact may hold beyond skops' defaults (NumPy, SciPy sparse, sklearn).
TRUSTED_TYPES: frozenset[str] = frozenset(
    {"router.competence.CompetenceIndex", "router.features.CompactTfidfVectorizer"}
)


def competence_text(conversation: Conversation, known_prompts: Iterable[str] = (), max_chars: int = 2000) -> str:
    """The text the index judges: system and user turns, capped.

    Assistant turns are left out: they are the tiers' own words, not the request. A system
    prompt the student was trained with (``known_prompts``) is dropped as well, because it is
    part of what the student knows, not part of what the client asks. Past ``max_chars`` the
    head and the tail are kept (the instructions and the latest turn), so scoring cost is
    bounded whatever the client sends.
    """
    if isinstance(conversation, str):
        text = conversation
    else:
        if isinstance(conversation, Mapping):  # a single message passed by mistake
            conversation = [conversation]
        known = {p.strip() for p in known_prompts}
        parts = []
        for message in conversation:
            if str(message.get("role", "user")) not in ("system", "developer", "user"):
                continue
            part = content_text(message.get("content")).strip()
            if part and part not in known:
                parts.append(part)
        text = "\n".join(parts)
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n" + text[-(max_chars - half):]
    return text


def _column_dot(reference: sp.csc_matrix, columns: list[int], weights: list[float]) -> np.ndarray:
    """``reference[:, columns] @ weights``, in the reference's dtype, with SciPy's compiled
    kernels called directly.

    The same two kernels the SciPy expression ends in (gather the columns, then a CSC
    matrix-vector product), without the index validation and intermediate matrix objects
    around them, which cost more than the arithmetic for one request's hundred-odd columns.
    Sums run in float32 like the stored reference (the batch path agrees to ~1e-7).
    """
    indptr, indices, data = reference.indptr, reference.indices, reference.data
    cols = np.asarray(columns, dtype=indptr.dtype)
    starts = indptr[cols]
    sub_indptr = np.empty(len(cols) + 1, dtype=indptr.dtype)
    sub_indptr[0] = 0
    np.cumsum(indptr[cols + 1] - starts, out=sub_indptr[1:])
    nnz = int(sub_indptr[-1])
    sub_indices, sub_data = np.empty(nnz, dtype=indices.dtype), np.empty(nnz, dtype=data.dtype)
    _sparsetools.csr_row_index(len(cols), cols, indptr, indices, data, sub_indices, sub_data)
    out = np.zeros(reference.shape[0], dtype=data.dtype)
    _sparsetools.csc_matvec(reference.shape[0], len(cols), sub_indptr, sub_indices, sub_data,
                            np.asarray(weights, dtype=data.dtype), out)
    return out


class _Block:
    """One fitted TF-IDF vectorizer as a look-up table, for scoring one text without sklearn overhead."""

    def __init__(self, vectorizer: CompactTfidfVectorizer, offset: int, weight: float) -> None:
        self.analyzer = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        self._idf = self.idf.tolist()
        self.offset = offset
        self.weight = weight

    def transform(self, text: str) -> tuple[list[int], list[float]]:
        """The text's non-zero features (offset applied), l2-normalised then weighted.

        Plain Python over the request's few hundred n-grams: NumPy's per-call cost outweighs
        the arithmetic at this size (same as ``router.fastpath``).
        """
        idf, log, offset = self._idf, math.log, self.offset
        counts = Counter([j for j in map(self.vocabulary.get, self.analyzer(text)) if j is not None])
        if not counts:
            return [], []
        values = [((log(c) + 1.0) if c > 1 else 1.0) * idf[j] for j, c in counts.items()]
        scale = self.weight / math.sqrt(math.fsum(v * v for v in values))
        return [j + offset for j in counts], [v * scale for v in values]


class CompetenceIndex(BaseEstimator):
    """Nearest-neighbour distance of a request to the student's training prompts.

    Parameters
    ----------
    features: ``"word"``, ``"char"`` or ``"word+char"`` TF-IDF blocks.
    k: neighbours averaged; 1 is "the closest prompt", larger k is smoother.
    target_acceptance: share of held-out in-scope validation prompts the threshold keeps.
    validation_fraction: share of the training prompts held out to choose the threshold.
    known_prompts: system prompts the student was trained with (not counted as request text).
    max_chars: cap on the text scored per request.
    min_df: an n-gram must occur in this many training prompts to be a feature (keeps the
        artifact small; rarer n-grams cannot make two prompts close anyway).
    """

    def __init__(self, features: str = "char", k: int = 5, target_acceptance: float = 0.95,
                 validation_fraction: float = 0.1, known_prompts: tuple[str, ...] = (), max_chars: int = 2000,
                 min_df: int = 2, random_state: int = 0) -> None:
        self.features = features
        self.k = k
        self.target_acceptance = target_acceptance
        self.validation_fraction = validation_fraction
        self.known_prompts = known_prompts
        self.max_chars = max_chars
        self.min_df = min_df
        self.random_state = random_state

    # -- fitting ----------------------------------------------------------------------
    def _check_params(self, n: int) -> None:
        if self.features not in FEATURE_SETS:
            raise ValueError(f"features must be one of {FEATURE_SETS}, got {self.features!r}")
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if not 0 < self.target_acceptance <= 1:
            raise ValueError("target_acceptance must be in (0, 1]")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1)")
        if n - self._n_validation(n) < self.k:
            raise ValueError(f"{n} training prompts are too few: need {MIN_VALIDATION} for validation "
                             f"and k={self.k} more to fit")

    def _n_validation(self, n: int) -> int:
        return max(MIN_VALIDATION, int(round(n * self.validation_fraction)))

    def _vectorizers(self) -> list[CompactTfidfVectorizer]:
        common = dict(sublinear_tf=True, lowercase=True, dtype=np.float32, min_df=self.min_df)
        blocks = []
        if "word" in self.features:
            blocks.append(CompactTfidfVectorizer(analyzer="word", ngram_range=(1, 2),
                                                 token_pattern=r"(?u)\b\w+\b", **common))
        if "char" in self.features:
            blocks.append(CompactTfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common))
        return blocks

    def _fit_reference(self, texts: list[str]) -> tuple[list[CompactTfidfVectorizer], sp.csc_matrix]:
        vectorizers = self._vectorizers()
        # min_df can prune everything on a tiny corpus; then keep every n-gram instead.
        for v in vectorizers:
            try:
                v.fit(texts)
            except ValueError:
                v.set_params(min_df=1).fit(texts)
        reference = self._embed(vectorizers, texts).tocsc()
        # Rounded to float16 precision here, not only on save, so that a loaded index scores
        # exactly like the one whose threshold was chosen (half the artifact, <1e-3 error).
        reference.data = reference.data.astype(np.float16).astype(np.float32)
        return vectorizers, reference

    @staticmethod
    def _embed(vectorizers: Sequence[CompactTfidfVectorizer], texts: list[str]) -> sp.csr_matrix:
        scale = 1.0 / math.sqrt(len(vectorizers))
        return (sp.hstack([v.transform(texts) for v in vectorizers], format="csr") * scale).astype(np.float32)

    def _distances(self, vectorizers, reference: sp.csc_matrix, texts: list[str],
                   leave_one_out: bool = False) -> np.ndarray:
        k = min(self.k, reference.shape[0] - int(leave_one_out))
        out = np.empty(len(texts))
        reference_t = reference.T.tocsr()
        for start in range(0, len(texts), _CHUNK):
            sims = (self._embed(vectorizers, texts[start:start + _CHUNK]) @ reference_t).toarray()
            if leave_one_out:  # the query's own copy in the reference: its most similar entry, dropped
                sims[np.arange(sims.shape[0]), sims.argmax(axis=1)] = -np.inf
            top = -np.partition(-sims, k - 1, axis=1)[:, :k]
            out[start:start + _CHUNK] = 1.0 - top.mean(axis=1)
        return np.clip(out, 0.0, 1.0)

    def fit(self, X: Sequence[Conversation], y: Any = None) -> "CompetenceIndex":
        """Fit on the student's training prompts (strings or chat message lists); ``y`` is ignored."""
        texts = [self._text(x) for x in X]
        self._check_params(len(texts))
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(texts))
        n_val = self._n_validation(len(texts))
        val, fit = [texts[i] for i in order[:n_val]], [texts[i] for i in order[n_val:]]
        vectorizers, reference = self._fit_reference(fit)
        val_d = self._distances(vectorizers, reference, val)
        self.validation_distances_ = np.sort(val_d).astype(np.float32)
        self.threshold_ = self.threshold_for(self.target_acceptance)
        # The reference is then every training prompt. More neighbours usually bring in-scope
        # requests closer, so serving accepts about as many as validation did, or more (refitting
        # also moves the idf weights a little, so this is not a guarantee: measure it).
        self.vectorizers_, self.reference_ = self._fit_reference(texts)
        self.n_reference_ = len(texts)
        self._fast = None
        return self

    def threshold_for(self, acceptance: float) -> float:
        """The distance that keeps ``acceptance`` of the held-out in-scope validation prompts.

        "higher" quantile: exactly that share is at or below it, not a point interpolated
        between two prompts. An operator who wants another trade-off calls this, no refit.
        """
        if not hasattr(self, "validation_distances_"):
            raise ValueError("CompetenceIndex is not fitted")
        if not 0 < acceptance <= 1:
            raise ValueError("acceptance must be in (0, 1]")
        return float(np.quantile(self.validation_distances_, acceptance, method="higher"))

    def validation_acceptance(self, threshold: float | None = None) -> float:
        """Share of held-out in-scope validation prompts at or below ``threshold`` (default: ``threshold_``)."""
        t = self.threshold_ if threshold is None else threshold
        return float(np.mean(self.validation_distances_ <= t))

    def validation_summary(self) -> dict:
        """What the threshold was chosen on, for cards and metadata."""
        d = self.validation_distances_
        return {"n": int(len(d)), "threshold": round(self.threshold_, 6), "acceptance": round(self.validation_acceptance(), 4),
                "distance_quantiles": {q: round(float(np.quantile(d, float(q))), 4) for q in ("0.5", "0.9", "0.95", "0.99")}}

    # -- scoring ----------------------------------------------------------------------
    def _text(self, conversation: Conversation) -> str:
        return competence_text(conversation, self.known_prompts, self.max_chars)

    def _check_fitted(self) -> None:
        if not hasattr(self, "reference_"):
            raise ValueError("CompetenceIndex is not fitted; call fit() with the student's training prompts")

    def distance(self, X: Sequence[Conversation], leave_one_out: bool = False) -> np.ndarray:
        """Mean cosine distance to the ``k`` nearest training prompts, one per conversation, in [0, 1].

        ``leave_one_out``: for conversations that are themselves training prompts (a router
        learning from outcomes on the training data), the nearest entry, their own copy, is
        skipped, so their distance is what an unseen request like them would get.
        """
        self._check_fitted()
        return self._distances(self.vectorizers_, self.reference_, [self._text(x) for x in X], leave_one_out)

    def distance_one(self, conversation: Conversation) -> float:
        """``distance([conversation])[0]`` for one request, without sklearn's per-call overhead."""
        self._check_fitted()
        if getattr(self, "_fast", None) is None:
            self._build_fast_path()
        text = self._text(conversation)
        # The gate and the router on our own outcomes (which reads the distance as a feature)
        # ask about the same request one after the other: the last answer is kept. One tuple,
        # replaced whole, so concurrent scoring threads never read a torn pair.
        last = getattr(self, "_last", None)
        if last is not None and last[0] == text:
            return last[1]
        distance = self._distance_of_text(text)
        self._last = (text, distance)
        return distance

    def _distance_of_text(self, text: str) -> float:
        idx: list[int] = []
        values: list[float] = []
        for block in self._fast:
            i, v = block.transform(text)
            idx += i
            values += v
        if not idx:
            return 1.0
        sims = _column_dot(self.reference_, idx, values)
        k = min(self.k, sims.shape[0])
        top = np.partition(sims, sims.shape[0] - k)[-k:]
        return float(min(1.0, max(0.0, 1.0 - top.mean())))

    def _build_fast_path(self) -> None:
        offset, weight, blocks = 0, 1.0 / math.sqrt(len(self.vectorizers_)), []
        for v in self.vectorizers_:
            blocks.append(_Block(v, offset, weight))
            offset += len(v.vocabulary_)
        self._fast = blocks

    def score_samples(self, X: Sequence[Conversation]) -> np.ndarray:
        """Higher is more typical of the training prompts (sklearn's outlier-detector convention)."""
        return -self.distance(X)

    def decision_function(self, X: Sequence[Conversation]) -> np.ndarray:
        """``threshold_ - distance``: >= 0 within the student's competence, < 0 outside it."""
        return self.threshold_ - self.distance(X)

    def predict(self, X: Sequence[Conversation]) -> np.ndarray:
        """+1 in scope, -1 out of scope, like sklearn's outlier detectors."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_fast", None)  # look-up tables are rebuilt on first use, never saved
        state.pop("_last", None)
        reference = state.pop("reference_", None)
        if reference is not None:  # plain arrays in their smallest exact dtypes: ~4 bytes per entry
            rows = reference.shape[0]
            state["reference_parts_"] = {
                "data": reference.data.astype(np.float16),
                "indices": reference.indices.astype(np.uint16 if rows <= 65536 else np.int32),
                "indptr": reference.indptr.astype(np.int64), "shape": [int(n) for n in reference.shape]}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        parts = state.pop("reference_parts_", None)
        if parts is not None:
            state["reference_"] = sp.csc_matrix(
                (parts["data"].astype(np.float32), parts["indices"].astype(np.int32), parts["indptr"]),
                shape=tuple(parts["shape"]))
        super().__setstate__(state)


class CompetenceArtifact(NamedTuple):
    index: CompetenceIndex
    metadata: dict


def save_competence(index: CompetenceIndex, path: Path | str, metadata: dict | None = None) -> Path:
    """Write ``index`` as a signed skops archive (see ``router/signed.py``)."""
    index._check_fitted()
    return dump_signed({"format": FORMAT, "format_version": FORMAT_VERSION, "index": index,
                        "metadata_json": json.dumps(metadata or {}, sort_keys=True, default=str)}, path)


def load_competence(path: Path | str) -> CompetenceArtifact:
    """Load a competence index, or raise ``UntrustedArtifactError`` / ``FileNotFoundError``."""
    payload = load_signed(path, TRUSTED_TYPES, "competence index", FORMAT, FORMAT_VERSION)
    if not isinstance(payload.get("index"), CompetenceIndex):
        raise UntrustedArtifactError(f"{path} does not hold a CompetenceIndex")
    return CompetenceArtifact(payload["index"], json.loads(payload["metadata_json"]))
