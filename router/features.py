"""Feature transformers: conversation columns and hand-made difficulty cues.

TF-IDF sees words; it does not see "how long", "how many numbers", "is there code",
"is it a multi-part question", or "is it English". Those cues predict where the cheap model
fails (arithmetic, multi-step reasoning, long contexts) and are cheap to compute, so they
sit beside the TF-IDF blocks and are also fed to the meta-model directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from router.messages import Conversation, to_text

_DIGIT = re.compile(r"\d")
_MATH = re.compile(r"[=+\-*/^<>√∑∫π≤≥≠±×÷%]|\\frac|\\sqrt|\$")
_CODE = re.compile(r"```|\bdef |\breturn\b|\bclass |;\s*$|\{|\}|#include|\bfunction\b|=>|\bint\b", re.M)
_CHOICE = re.compile(r"^\s*\(?[A-Ha-h][.)]\s", re.M)
_REASONING = re.compile(
    r"\b(why|how|prove|explain|derive|calculate|compute|solve|evaluate|estimate|determine|"
    r"which of the following|except|not|least|most likely|best|statement|implies|therefore|"
    r"if and only if|suppose|assume)\b",
    re.I,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

HAND_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "n_turns",
    "log_conversation_chars",
    "digit_ratio",
    "log_numbers",
    "math_symbols",
    "code_markers",
    "question_marks",
    "n_choices",
    "reasoning_words",
    "non_ascii_ratio",
    "line_count",
    "avg_word_len",
)


def hand_features(last_user: str, conversation: str, n_turns: int) -> list[float]:
    """Fixed-length numeric cues for one conversation (see ``HAND_FEATURE_NAMES``)."""
    n_chars = len(last_user)
    words = last_user.split()
    n_words = len(words)
    # characters above U+007F, counted in C (the encoder drops exactly those)
    non_ascii = n_chars - len(last_user.encode("ascii", "ignore"))
    return [
        math.log1p(n_chars),
        math.log1p(n_words),
        float(n_turns),
        math.log1p(len(conversation)),
        len(_DIGIT.findall(last_user)) / max(n_chars, 1),
        math.log1p(len(_NUMBER.findall(last_user))),
        math.log1p(len(_MATH.findall(last_user))),
        math.log1p(len(_CODE.findall(last_user))),
        float(min(last_user.count("?"), 5)),
        float(len(_CHOICE.findall(last_user))),
        math.log1p(len(_REASONING.findall(last_user))),
        non_ascii / max(n_chars, 1),  # a coarse language cue: non-Latin scripts
        math.log1p(last_user.count("\n")),
        (sum(map(len, words)) / n_words) if n_words else 0.0,
    ]


class ConversationColumns(BaseEstimator, TransformerMixin):
    """Conversations (strings or chat message lists) -> ``(n, 3)`` object array.

    Columns: last user turn, whole conversation, number of user turns. Later steps pick
    their column in a ``ColumnTransformer``, so each text is extracted once per request.
    """

    def fit(self, X: Sequence[Conversation], y=None) -> "ConversationColumns":
        return self

    def transform(self, X: Sequence[Conversation]) -> np.ndarray:
        out = np.empty((len(X), 3), dtype=object)
        for i, conv in enumerate(X):
            text = to_text(conv)
            out[i, 0], out[i, 1], out[i, 2] = text.last_user, text.conversation, text.n_turns
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array(["last_user", "conversation", "n_turns"], dtype=object)


class HandFeatures(BaseEstimator, TransformerMixin):
    """The hand-made cues from a ``ConversationColumns`` array, as a dense float matrix."""

    def fit(self, X: np.ndarray, y=None) -> "HandFeatures":
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=object)
        return np.array([hand_features(str(r[0]), str(r[1]), int(r[2])) for r in X], dtype=float).reshape(
            len(X), len(HAND_FEATURE_NAMES)
        )

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array(HAND_FEATURE_NAMES, dtype=object)


class CompactTfidfVectorizer(TfidfVectorizer):
    """``TfidfVectorizer`` whose vocabulary is saved as one string, not a dict.

    skops writes a dict as one JSON node per entry (about 1 kB per term), which would make
    an 85k-term router artifact hundreds of megabytes; a separator-joined string in index
    order holds the same information in well under a megabyte.
    """

    _SEP = "\x00"

    def __getstate__(self) -> dict:
        # A copy: on Python 3.11+ object.__getstate__ may return the live __dict__.
        state = dict(super().__getstate__())
        vocab = state.pop("vocabulary_", None)
        if vocab is not None:
            terms = [""] * len(vocab)
            for term, idx in vocab.items():
                if self._SEP in term:
                    raise ValueError("vocabulary term contains the separator; cannot save compactly")
                terms[idx] = term
            state["vocabulary_terms_"] = self._SEP.join(terms)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        terms = state.pop("vocabulary_terms_", None)
        if terms is not None:
            state["vocabulary_"] = {t: i for i, t in enumerate(terms.split(self._SEP))} if terms else {}
        super().__setstate__(state)
