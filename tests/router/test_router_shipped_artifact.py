"""The committed default artifact loads, says what it is, and routes about 30 % to the teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router import load_router
from router.data import grouped_split

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "router" / "mmlu_router.skops"


def test_shipped_artifact(mmlu) -> None:
    assert ARTIFACT.is_file(), f"missing {ARTIFACT}; build it with python -m router train --out {ARTIFACT}"
    assert ARTIFACT.stat().st_size < 15 * 1024 * 1024
    router = load_router(ARTIFACT)
    meta = router.metadata
    for key in ("training_data", "heldout_metrics", "threshold", "split", "created", "router_version"):
        assert key in meta, key
    assert meta["split"]["kind"] == "heldout"
    assert meta["threshold"]["teacher_share_target"] == 0.3
    # Held-out prompts of the artifact's own split: ~30 % go to the teacher.
    test_mask = grouped_split(mmlu.prompts, meta["split"]["test_size"], meta["split"]["seed"])
    idx = np.random.RandomState(0).choice(np.flatnonzero(test_mask), 1500, replace=False)
    scores = np.array([router.score([{"role": "user", "content": mmlu.prompts[i]}]) for i in idx])
    assert abs(np.mean(scores >= router.threshold) - 0.3) < 0.06
    assert meta["heldout_metrics"]["router"]["apgr"] > meta["heldout_metrics"]["random"]["apgr"]
