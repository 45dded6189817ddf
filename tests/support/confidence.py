"""A real cascade confidence model for stub tiers, whose answers' logprobs the tests set.

The stub upstream answers near-certain tokens (logprob -0.05) unless the request carries a
``[logprob=-4]`` tag; the model here, fitted on synthetic windows of both kinds, keeps the first
and rejects the second, so the serving code's decision runs end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router.confidence import CascadeConfidence, logprob_features, save_confidence


def fitted_confidence(path: Path, decision_tokens: int, seed: int = 0, threshold: float = 0.5) -> Path:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(300):
        sure = rng.random() < 0.7
        lp = -rng.exponential(0.1) if sure else -rng.uniform(1.0, 6.0)
        rows.append(logprob_features([{"token": "w", "logprob": lp}] * decision_tokens, decision_tokens))
        labels.append(int(sure))
    model = CascadeConfidence().fit(np.array(rows), np.array(labels))
    return save_confidence(model, path, threshold, {"data": "test"})
