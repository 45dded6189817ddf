"""The default routing chain with a new student, measured on what needs only the student's answers.

``routing_competence.py`` judges every policy on all tiers' answers (~1.5 h of teacher time on
this CPU). When the student is replaced, the shares the default chain (gate + checked band ->
cascade) moves depend only on the gate (the student's competence index) and the cascade's
confidence in the *student's* first line; the teacher's answers matter only for accuracy vs
all-teacher. So this script takes the student's answers on the same seeded samples
(``python -m benchmarks.routing_competence generate --tiers student ...``) and reports, for the
shipped index and confidence model: the share of Banking77 test kept on the student, the shares
of HWU64 and MMLU sent to the teacher or flagship, and the intent accuracy (vs the gold label) of
the student answers the cascade keeps and of those it escalates. Thresholds are the shipped ones
(chosen on Banking77 train carves); nothing is chosen here.

    python -m benchmarks.routing_student_swap --outcomes DIR   # -> benchmarks/results/routing_student_swap.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, wilson
from benchmarks.routing_competence import plan_sizes
from benchmarks.routing_outcomes import load_outcomes, sample_sets
from benchmarks.routing_policies import load_policies
from distill.data import parse_intent


def share(k: int, n: int) -> dict:
    return {"value": round(k / n, 4) if n else None, "n": n, "wilson_95": wilson(k, n)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outcomes", type=Path, required=True, help="folder with outcomes.student.jsonl")
    p.add_argument("--confidence", type=Path, default=REPO / "artifacts" / "router" / "cascade_confidence.skops")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from router.confidence import load_confidence, logprob_features

    sets = sample_sets(plan_sizes(), seed=args.seed)
    outcomes = load_outcomes(args.outcomes)
    routes, _ = load_policies(args.confidence)
    band = routes["competence~band"]
    conf = load_confidence(args.confidence)
    out: dict = {"benchmark": "routing_student_swap", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "student": json.loads((REPO / "artifacts" / "tiers" / "student" / "distill_card.json").read_text())["name"],
                 "cascade_threshold": conf.threshold, "cascade_operating_point_on_train_carve":
                     conf.metadata.get("operating_point"), "sets": {}}
    for name in ("b77_test", "hwu64", "mmlu"):
        rows = [r for r in sets[name] if ("student", r["id"]) in outcomes]
        first = [band(r["messages"]) for r in rows]  # student | teacher (band) | flagship
        to_student = [r for r, t in zip(rows, first) if t == "student"]
        proba = conf.model.predict_proba(np.array([logprob_features(outcomes[("student", r["id"])]["logprobs"])
                                                   for r in to_student]))[:, 1] if to_student else np.array([])
        kept = [r for r, q in zip(to_student, proba) if q >= conf.threshold]
        escalated = [r for r, q in zip(to_student, proba) if q < conf.threshold]
        entry = {"gate_to_student": share(len(to_student), len(rows)),
                 "on_student": share(len(kept), len(rows)),
                 "on_teacher_or_flagship": share(len(rows) - len(kept), len(rows))}
        if name == "b77_test":
            def correct(rs: list[dict]) -> int:
                return sum(parse_intent(outcomes[("student", r["id"])]["text"]) == r["label"] for r in rs)
            entry["student_accuracy_on_kept"] = share(correct(kept), len(kept))
            entry["student_accuracy_on_escalated"] = share(correct(escalated), len(escalated))
            entry["student_accuracy_all_gated_in"] = share(correct(to_student), len(to_student))
        out["sets"][name] = entry
    out["previous_student_from_routing_competence"] = {
        "b77_test_on_student": 0.913, "hwu64_on_teacher_or_flagship": 0.900, "mmlu_on_teacher_or_flagship": 1.0,
        "source": "README / routing_competence.json (default policy), student banking77-6l-kd-8ep"}
    (RESULTS / "routing_student_swap.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out["sets"], indent=1))


if __name__ == "__main__":
    main()
