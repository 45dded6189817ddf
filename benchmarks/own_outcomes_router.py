"""Issue #12 item 3: how well do our own tiers' outcomes predict student-teacher agreement, and from what?

Reads ``benchmarks/results/cascade_outcomes_validation.jsonl`` (real vLLM student + teacher on a
seeded carve of Banking77 *train*, see ``benchmarks/cascade_outcomes.py``) and compares, all on
5-fold out-of-fold probabilities of P(agree):

* ``confidence``: the cascade's model on the student's first-line logprobs (``router.confidence``);
* ``distance``: the competence distance alone (1 - distance as the score);
* ``router``: ``router.outcome_router.OutcomeRouter`` on text + competence distance (decides before
  the student is asked);
* ``router+confidence``: the same plus the confidence (a cascade-time router).

The competence distance comes from an index fitted on Banking77 train *minus* the carved prompts
(the shipped index contains them, which would make their distance near 0). Thresholds are
chosen for cascade quality 0.98 on the same out-of-fold rows (no test split is read). Caveat:
student and teacher were trained on all of Banking77 train, so agreement here is optimistic.

    python -m benchmarks.own_outcomes_router   ->  benchmarks/results/own_outcomes_router.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import RESULTS, log, require_data
from distill.data import SYSTEM_PROMPT, messages_for, read_csv
from router.competence import CompetenceIndex
from router.confidence import CascadeConfidence, QualityOperatingPoints, outcome_rows
from router.outcome_router import OutcomeRouter

OUTCOMES = RESULTS / "cascade_outcomes_validation.jsonl"
OUT = RESULTS / "own_outcomes_router.json"


class _Scores(QualityOperatingPoints):
    """Operating points of any out-of-fold score (for the distance-only baseline)."""

    def __init__(self, proba: np.ndarray, labels: np.ndarray) -> None:
        self.validation_proba_, self.validation_labels_ = proba, labels


def summary(name: str, scorer: QualityOperatingPoints, quality: float) -> dict:
    p, y = scorer.validation_proba_, scorer.validation_labels_
    point = scorer.operating_point(scorer.threshold_for(quality=quality))
    return {"name": name, "oof_roc_auc": round(float(roc_auc_score(y, p)), 4),
            **{k: round(v, 4) for k, v in point.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcomes", type=Path, default=OUTCOMES)
    parser.add_argument("--quality", type=float, default=0.98)
    args = parser.parse_args()
    lines = [json.loads(x) for x in args.outcomes.read_text().splitlines() if x.strip()]
    X, y = outcome_rows(lines)
    log(f"{len(lines)} outcomes, agreement {y.mean():.3f}")
    carved = {r["index"] for r in lines}
    train = [r["text"] for i, r in enumerate(read_csv(require_data("banking77/train.csv"))) if i not in carved]
    index = CompetenceIndex(known_prompts=(SYSTEM_PROMPT,)).fit(train)
    distance = index.distance([messages_for(r["text"]) for r in lines])
    log(f"competence index fitted on {len(train)} train prompts (carve excluded); threshold {index.threshold_:.3f}")
    confidence = CascadeConfidence().fit(X, y)
    rows = [{"text": r["text"], "competence_distance": float(d), "confidence": float(c)}
            for r, d, c in zip(lines, distance, confidence.validation_proba_)]  # out-of-fold confidence: no leak
    results = [summary("confidence (cascade, first-line logprobs)", confidence, args.quality),
               summary("distance only", _Scores(1.0 - distance, y), args.quality),
               summary("router: text + competence distance", OutcomeRouter().fit(rows, y), args.quality),
               summary("router: text + distance + confidence", OutcomeRouter(use_confidence=True).fit(rows, y),
                       args.quality)]
    for r in results:
        log(f"{r['name']:45s} AUC {r['oof_roc_auc']:.3f}  student share {r['student_share']:.3f}  "
            f"quality {r['quality']:.4f}")
    OUT.write_text(json.dumps({
        "data": f"{args.outcomes.name}: {len(lines)} Banking77 train prompts, real vLLM student/teacher",
        "caveat": "student and teacher were trained on all of Banking77 train: agreement is optimistic",
        "n": len(lines), "agreement": float(y.mean()), "quality_target": args.quality,
        "threshold_chosen_on": "5-fold out-of-fold probabilities (no test split)", "results": results}, indent=2))
    log(f"wrote {OUT}")


if __name__ == "__main__":
    main()
