"""``Router``: what the gateway holds -- a fitted estimator, its threshold, its metadata.

The gateway scores one request at a time on its hot path, so ``score`` goes through
``FastScorer`` (same maths as ``ComplexityRouter.predict_proba``, without scikit-learn's
per-call overhead); batches go through the estimator itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import sklearn

from router.estimator import ComplexityRouter
from router.fastpath import FastScorer
from router.messages import Conversation


@dataclass
class Router:
    """A trained router ready to serve.

    ``threshold``: a score at or above it means "send to the strong tier (teacher)".
    """

    estimator: ComplexityRouter
    threshold: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def score(self, messages: Conversation | Sequence[Mapping[str, Any]]) -> float:
        """P(cheap tier not good enough) for one chat request, in [0, 1]."""
        return self._fast.score(messages)

    def score_many(self, conversations: Sequence[Conversation]) -> list[float]:
        """Scores for a batch (evaluation, calibration)."""
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self.estimator.predict_proba(list(conversations))[:, 1].tolist()

    @cached_property
    def _fast(self) -> FastScorer:
        return FastScorer(self.estimator)

    def use_teacher(self, messages: Conversation | Sequence[Mapping[str, Any]]) -> bool:
        """Routing decision at the stored threshold."""
        return self.score(messages) >= self.threshold
