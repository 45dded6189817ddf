"""Fit a router on routing data and wrap it with its threshold and provenance.

The artifact must say what it was trained on, how its threshold was chosen and how well it
did, so that whoever deploys it can tell without re-running anything.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sklearn

from router.data import RoutingData
from router.estimator import ComplexityRouter
from router.scoring import Router


def train_router(
    train: RoutingData,
    teacher_share: float | None = 0.3,
    threshold: float | None = None,
    use_domains: bool = True,
    **params: Any,
) -> Router:
    """Fit ``ComplexityRouter`` on ``train`` and set the threshold.

    ``threshold`` wins when given; otherwise it is chosen so that ``teacher_share`` of the
    training prompts (their out-of-fold scores) go to the teacher.
    """
    if threshold is None and teacher_share is None:
        raise ValueError("give a threshold or a teacher_share")
    estimator = ComplexityRouter(**params)
    domains = train.domains if use_domains and len(np.unique(train.domains)) > 1 else None
    estimator.fit(train.prompts, train.outcomes, domains=domains)
    if threshold is None:
        threshold = estimator.threshold_for(teacher_share)
        threshold_source = f"threshold_for({teacher_share}) on out-of-fold training scores"
    else:
        threshold_source = "set directly"
    from router import __version__

    metadata: dict[str, Any] = {
        "router_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_data": train.describe(),
        "estimator_params": {k: v for k, v in estimator.get_params().items()},
        "heads": list(estimator.head_names_),
        "domain_head": estimator.domain_head_ is not None,
        "threshold": {"value": float(threshold), "source": threshold_source, "teacher_share_target": teacher_share},
        "environment": {"python": platform.python_version(), "scikit_learn": sklearn.__version__, "numpy": np.__version__},
    }
    return Router(estimator=estimator, threshold=float(threshold), metadata=metadata)
