"""``python -m router train-outcomes``: fit the router on our own tiers' outcomes and write its card.

The offline step for ``router/outcome_router.py`` (the model the gateway loads): read the
student's and teacher's outcomes on prompts from the workload's *training* data, add each
prompt's competence distance, fit, choose the threshold for a quality target on out-of-fold
probabilities, and record on what data and how.

The outcome prompts are usually among the student's training prompts, which its competence
index holds: their distance would be ~0, nothing like an unseen request's. So the distance is
taken leave-one-out (``CompetenceIndex.distance(..., leave_one_out=True)``): the prompt's own
copy in the index is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from router.cascade_calibration import CAVEAT, OUT_OF_FOLD, provenance, read_outcomes
from router.competence import load_competence
from router.outcome_router import OutcomeRouter, save_outcome_router
from router.signed import content_digest


def outcome_router_rows(lines: list[dict], index, leave_one_out: bool = True) -> tuple[list[dict], np.ndarray]:
    """``({text, competence_distance}, agree)`` per outcome record (``benchmarks/cascade_outcomes.py``)."""
    distances = index.distance([str(r["text"]) for r in lines], leave_one_out=leave_one_out)
    rows = [{"text": str(r["text"]), "competence_distance": float(d)} for r, d in zip(lines, distances)]
    return rows, np.array([int(bool(r["agree"])) for r in lines])


def train_outcomes(outcomes: Path, competence: Path, out: Path, quality: float = 0.98,
                   leave_one_out: bool = True) -> dict:
    """Fit on every outcome row; write the artifact; return its card."""
    lines = read_outcomes(outcomes)
    index = load_competence(competence).index
    rows, y = outcome_router_rows(lines, index, leave_one_out)
    model = OutcomeRouter().fit(rows, y)
    threshold = model.threshold_for(quality=quality)
    card = {
        "data": f"{outcomes.name}: {len(lines)} prompts of the workload's training data with the real student's and "
                "teacher's answers; label = the student's first line equals the teacher's",
        "caveat": CAVEAT,
        "n": len(lines),
        "agreement": float(y.mean()),
        "features": ["text (char 3-5-gram TF-IDF)", "competence_distance"],
        "competence_index": str(competence),
        "competence_sha256": content_digest(competence),
        "distance": "leave-one-out (the prompt's own copy in the index skipped)" if leave_one_out else "as served",
        "oof_roc_auc": float(roc_auc_score(y, model.validation_proba_)),
        "quality_target": quality,
        "quality_definition": "share of final answers that agree with the teacher's (routed-away requests get the "
                              "teacher's)",
        "threshold": threshold,
        "threshold_chosen_on": OUT_OF_FOLD,
        "operating_point": model.operating_point(threshold),
        "curve": model.curve(),
        **provenance(),
    }
    save_outcome_router(model, threshold, out, card)
    return card
