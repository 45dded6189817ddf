"""``python -m router calibrate-cascade``: fit the cascade's confidence model and write its card.

Kept apart from ``router/confidence.py`` (the model and its artifact, which the gateway loads)
because this is the offline step: read outcomes, fit, choose the operating point, and record
how it was chosen, on what data, and what that data cannot tell.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

from router.confidence import DECISION_TOKENS, FEATURE_NAMES, CascadeConfidence, outcome_rows, save_confidence

CAVEAT = ("The outcomes come from Banking77 train prompts, and the shipped student and teacher were both trained on "
          "all of Banking77 train (sequence-level KD on the teacher's generations), so agreement here is optimistic "
          "compared with unseen traffic: expect more escalations and a lower accepted-set agreement in production. "
          "Re-run on held-out traffic (shadow pairs) before trusting the quality target.")


OUT_OF_FOLD = "5-fold out-of-fold probabilities of the outcome rows (never a test split)"


def provenance() -> dict:
    """When and with what an artifact's card was written."""
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "sklearn": sklearn.__version__}}


def read_outcomes(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
    if not lines:
        raise ValueError(f"{path} holds no outcomes")
    return lines


def calibrate(outcomes: Path, out: Path, quality: float | None = 0.98, *, tier: str = "student",
              label: str = "agree", keep: float | None = None) -> dict:
    """Fit on every outcome row; the threshold is chosen on the model's out-of-fold probabilities.

    The default is the cascade's model: the student's logprobs, labelled by agreement with the
    teacher, thresholded for a ``quality`` target. ``tier="teacher", label="teacher_correct",
    keep=0.95`` is the competence gate's band check: the workload teacher's logprobs, labelled
    by whether its answer is the gold one, thresholded to keep 95 % of these *in-scope* rows
    (no out-of-scope data is needed or used).
    """
    lines = read_outcomes(outcomes)
    X, y = outcome_rows(lines, tier, label)
    model = CascadeConfidence().fit(X, y)
    threshold = model.threshold_for(student_share=keep) if keep is not None else model.threshold_for(quality=quality)
    coef = model.pipeline_.named_steps["logit"].coef_[0]
    what = ("the student's intent line equals the teacher's" if (tier, label) == ("student", "agree")
            else f"{label} (the {tier}'s answer)")
    card = {
        "data": f"{outcomes.name}: {len(lines)} Banking77 train prompts (seeded carve, see benchmarks/cascade_outcomes.py); "
                f"real vLLM tiers, greedy; features: the {tier}'s first-line logprobs; label = {what}",
        "caveat": CAVEAT,
        "n": len(lines),
        "tier": tier,
        "label": label,
        "agreement": float(y.mean()),
        "student_accuracy": float(np.mean([r.get("student_correct", False) for r in lines])),
        "teacher_accuracy": float(np.mean([r.get("teacher_correct", False) for r in lines])),
        "features": list(FEATURE_NAMES),
        "coefficients": dict(zip(FEATURE_NAMES, map(float, coef))),
        "decision_tokens": DECISION_TOKENS,
        "oof_roc_auc": float(roc_auc_score(y, model.validation_proba_)),
        "quality_target": None if keep is not None else quality,
        "keep_target": keep,
        "quality_definition": "share of final answers that agree with the teacher's (escalated answers are the teacher's)",
        "threshold": threshold,
        "threshold_chosen_on": OUT_OF_FOLD + (f": the lowest keeping {keep:.0%} of them" if keep is not None else ""),
        "operating_point": model.operating_point(threshold),
        "curve": model.curve(),
        **provenance(),
    }
    save_confidence(model, out, threshold, card)
    return card
