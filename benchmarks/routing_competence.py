"""Routing competence: which policy sends in-scope traffic to the student and the rest to the teacher?

Run from the repository root, against running vLLM servers (the flagship process serves the
packaged base as ``flagship`` and the support adapter as ``teacher``; the student its own)::

    python -m benchmarks.routing_competence generate --flagship-url URL --student-url URL
    python -m benchmarks.routing_competence evaluate

``generate`` asks each tier once per sampled message (``benchmarks/routing_outcomes.py``);
``evaluate`` replays every policy's *choices* over those answers offline, with the gateway's
own policy objects (``gateway.routing``), so every policy is judged on the same answers:

* share of Banking77 test (in scope) on the student; share of HWU64 test and MMLU (out of
  scope) on the teacher or flagship; 95 % Wilson intervals;
* Banking77 intent accuracy relative to all-teacher;
* compute-priced cost (the defaults' prices; a rejected cascade attempt is charged too);
* added latency: the decision's p50/p99 in-process for non-cascade policies; for the cascade,
  time to first token of accepted requests (the student's time to its decision point) and of
  escalated ones (that plus the teacher's time to first token), composed from the measured
  per-tier streams.

Thresholds are never chosen here on the evaluated sets: the JSON names the split that chose
each one. HWU64 is evaluation only. Writes ``benchmarks/results/routing_competence.json`` and
``.png``. Data: Banking77 (PolyAI, CC BY 4.0), HWU64 (Liu et al. 2019, CC BY 4.0), RouteLLM
MMLU (Apache-2.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, log
from benchmarks.common import wilson
from benchmarks.routing_policies import latency, load_policies, note_keys
from benchmarks.routing_outcomes import MAX_TOKENS, generate, load_outcomes, sample_sets, throughput
from distill.data import parse_intent

OUT = RESULTS / "routing_competence.json"
# Raw answers with logprobs (~10 MB): kept out of the repository, one file per generating run.
OUTCOMES = REPO / ".tierwise" / "routing_competence"
HALF_WIDTH = 0.03  # every share's 95 % interval within +-3 points
# Expected shares (earlier measurements, benchmarks/results/competence_index.json) set the sizes:
# HWU64 spans 0.1-0.9 across policies, so p = 0.5; the Banking77 and MMLU shares that matter
# lie >= 0.85.
PLANNING_P = {"b77_test": 0.85, "hwu64": 0.5, "mmlu": 0.85}
FLAGSHIP_SUBSAMPLE = {"hwu64": 60, "mmlu": 40}  # the strong tiers' answer lengths out of scope (cost only)
B77_VAL = 300  # carved from Banking77 train: only for a fallback cascade threshold
PRICES = {"student": (0.030, 0.30), "teacher": (0.084, 0.84), "flagship": (0.084, 0.84)}  # gateway/defaults.yaml
STRONG = ("teacher", "flagship")
QUALITY_TARGET = 0.98
LOOSE_QUALITY = 0.95
VALIDATION_OUTCOMES = RESULTS / "cascade_outcomes_validation.jsonl"


def sample_size(p: float, half_width: float = HALF_WIDTH, z: float = 1.96) -> int:
    """Smallest n whose Wilson interval at share ``p`` is within ``half_width``."""
    n = 10
    while True:
        lo, hi = wilson(round(p * n), n, z)
        if (hi - lo) / 2 <= half_width:
            return n
        n += 1


def share(mask: list[bool]) -> dict:
    k, n = int(sum(mask)), len(mask)
    ci = wilson(k, n)
    return {"share": round(k / n, 4) if n else None, "ci95": ci, "n": n,
            "within_3_points": (ci[1] - ci[0]) / 2 <= HALF_WIDTH + 1e-9}


# ----------------------------------------------------------------------------- policies
# --------------------------------------------------------------------------- evaluation
def first_line_tokens(tokens: list[dict]) -> int:
    for i, t in enumerate(tokens):
        if "\n" in t["token"] and i > 0:
            return i + 1
    return len(tokens)


def cascade_model(path: Path, sets: dict, outcomes: dict) -> tuple[object, float, str]:
    """H11's shipped confidence model and threshold; else one fitted here on Banking77 *train* validation outcomes."""
    from router.confidence import CascadeConfidence, load_confidence, logprob_features, outcome_rows

    if path.is_file():
        loaded = load_confidence(path)
        split = loaded.metadata.get("threshold_split") or loaded.metadata.get("data") or "see artifact metadata"
        return loaded.model, loaded.threshold, f"{path.relative_to(REPO)} (threshold from: {split})"
    if VALIDATION_OUTCOMES.is_file():  # H11's outcomes on Banking77 train rows (benchmarks/cascade_outcomes.py)
        lines = [json.loads(line) for line in VALIDATION_OUTCOMES.read_text().splitlines() if line.strip()]
        X, y = outcome_rows(lines)
        source = f"{VALIDATION_OUTCOMES.relative_to(REPO)}"
    else:
        rows = [r for r in sets["b77_val"] if ("student", r["id"]) in outcomes and ("teacher", r["id"]) in outcomes]
        X = np.array([logprob_features(outcomes[("student", r["id"])]["logprobs"]) for r in rows])
        y = np.array([int(parse_intent(outcomes[("student", r["id"])]["text"])
                          == parse_intent(outcomes[("teacher", r["id"])]["text"])) for r in rows])
        source = "b77_val of this benchmark"
    model = CascadeConfidence().fit(X, y)
    threshold = model.threshold_for(quality=QUALITY_TARGET)
    return model, threshold, (f"fitted here on {len(y)} Banking77 *train* rows carved as validation ({source}; student-"
                              f"teacher intent agreement); threshold_for(quality={QUALITY_TARGET}) on their out-of-fold "
                              "probabilities. Caveat: both tiers were trained on all of Banking77 train, so the "
                              "agreement there is optimistic")


def evaluate(args: argparse.Namespace) -> dict:
    from router.confidence import logprob_features

    sets = sample_sets(plan_sizes(), seed=args.seed)
    outcomes = load_outcomes(args.outcomes)
    routes, notes = load_policies(args.confidence)
    model, c_threshold, c_note = cascade_model(args.confidence, sets, outcomes)
    evaluated = {name: [r for r in sets[name] if ("student", r["id"]) in outcomes
                        and (name != "b77_test" or ("teacher", r["id"]) in outcomes)]
                 for name in ("b77_test", "hwu64", "mmlu")}
    rows = [r for name in evaluated for r in evaluated[name]]
    student = {r["id"]: outcomes[("student", r["id"])] for r in rows}
    proba = model.predict_proba(np.array([logprob_features(student[r["id"]]["logprobs"]) for r in rows]))[:, 1]
    # A second operating point, also chosen on the validation rows: a looser quality target keeps
    # more in-scope traffic on the student.
    loose = float(model.threshold_for(quality=LOOSE_QUALITY))
    confident = {r["id"]: bool(p >= c_threshold) for r, p in zip(rows, proba)}
    confident_loose = {r["id"]: bool(p >= loose) for r, p in zip(rows, proba)}
    # Mean answer length of the strong tiers out of scope (subsample), for rows they did not answer.
    mean_completion = {name: float(np.mean([outcomes[(t, r["id"])]["completion_tokens"] for r in evaluated[name]
                                            for t in STRONG if (t, r["id"]) in outcomes] or [MAX_TOKENS]))
                       for name in evaluated}

    def cost(tier: str, row: dict, name: str) -> float:
        done = outcomes.get((tier, row["id"]))
        prompt = (done or student[row["id"]])["prompt_tokens"]  # one tokenizer and chat template for all tiers
        completion = done["completion_tokens"] if done else mean_completion[name]
        price_in, price_out = PRICES[tier]
        return (prompt * price_in + completion * price_out) / 1e6

    # The band check: the support teacher's first-line confidence (its own model, calibrated on
    # in-scope validation answers only) keeps its answer, else the general flagship answers.
    band_model, band_threshold, band_note = band_check_model(args.band_check)
    band_confident = {}
    for r in rows:
        answer = outcomes.get(("teacher_lp", r["id"]))
        if answer is not None and band_model is not None:
            band_confident[r["id"]] = bool(band_model.predict_proba(
                logprob_features(answer["logprobs"]).reshape(1, -1))[0, 1] >= band_threshold)

    def cascade(inner: Callable | None, accepts: dict | None = None, band_check: bool = False) -> Callable:
        accepts = confident if accepts is None else accepts

        def route(row: dict) -> tuple[str, bool]:  # (tier, escalated)
            tier = inner(row["messages"]) if inner else "student"
            # the gate's band (competence~band routes nothing else to the teacher before the cascade)
            if band_check and tier == "teacher" and routes["competence~band"](row["messages"]) == "teacher":
                kept = band_confident.get(row["id"])
                return ("teacher", False) if kept is None or kept else ("flagship", True)
            if tier != "student":
                return tier, False
            return ("student", False) if accepts[row["id"]] else ("teacher", True)
        return route

    def attempt_cost(final: str, row: dict, name: str) -> float:
        """A rejected first attempt, charged up to its decision point: the student's in the cascade,
        the teacher's in the band check (escalated to the flagship)."""
        if final == "flagship":
            answer = outcomes[("teacher_lp", row["id"])]
            return cost("teacher", row, name) * decision_share(answer)
        return cost("student", row, name) * decision_share(student[row["id"]])

    policies: dict[str, Callable[[dict], tuple[str, bool]]] = {
        "all_student": lambda r: ("student", False),
        "all_teacher": lambda r: ("teacher", False),
        **{name: (lambda f: lambda r: (f(r["messages"]), False))(f) for name, f in routes.items()},
        "cascade": cascade(None),
        "competence+cascade": cascade(routes["competence_gate"]),
        "competence+outcome+cascade": cascade(routes["competence+outcome"]),
        "competence~band+cascade": cascade(routes["competence~band"]),
        "competence~band+outcome+cascade": cascade(routes["competence~band+outcome"]),
        f"competence~band+cascade@q{LOOSE_QUALITY}": cascade(routes["competence~band"], confident_loose),
        "competence~band?check+cascade": cascade(routes["competence~band"], band_check=True),
        "competence~band?check+outcome+cascade": cascade(routes["competence~band+outcome"], band_check=True),
        # The gate sending everything it rejects to the support teacher (before the flagship existed):
        # what in-scope accuracy the general flagship costs where the gate misjudges a support message.
        "competence(->teacher)+cascade": cascade(lambda m: {"flagship": "teacher"}.get(
            routes["competence_gate"](m), routes["competence_gate"](m))),
    }
    notes["check"] = f"band check: {band_note}; unsure -> flagship"
    notes["cascade"] = (f"confidence model {c_note}; threshold {c_threshold:.4f} (quality {QUALITY_TARGET}); "
                        f"@q{LOOSE_QUALITY}: threshold_for(quality={LOOSE_QUALITY}) on the same validation rows = "
                        f"{loose:.4f}; escalations go to teacher")
    teacher_correct = [parse_intent(outcomes[("teacher", r["id"])]["text"]) == r["label"] for r in evaluated["b77_test"]]
    teacher_accuracy = float(np.mean(teacher_correct))
    results = {}
    for pname, policy in policies.items():
        choice = {name: [policy(r) for r in evaluated[name]] for name in evaluated}
        # The general flagship was never taught the 77 labels: where it has no measured answer for a
        # Banking77 message the gate sent it, the answer counts as wrong (a lower bound on accuracy).
        answers = [outcomes.get((tier, r["id"])) for r, (tier, _) in zip(evaluated["b77_test"], choice["b77_test"])]
        correct = [bool(a) and parse_intent(a["text"]) == r["label"] for r, a in zip(evaluated["b77_test"], answers)]
        entry: dict = {
            "b77_test_on_student": share([t == "student" for t, _ in choice["b77_test"]]),
            "hwu64_on_teacher_or_flagship": share([t in STRONG for t, _ in choice["hwu64"]]),
            "mmlu_on_teacher_or_flagship": share([t in STRONG for t, _ in choice["mmlu"]]),
            "hwu64_on_flagship": round(float(np.mean([t == "flagship" for t, _ in choice["hwu64"]])), 4),
            "mmlu_on_flagship": round(float(np.mean([t == "flagship" for t, _ in choice["mmlu"]])), 4),
            "b77_accuracy": {"accuracy": round(float(np.mean(correct)), 4), "ci95": wilson(sum(correct), len(correct)),
                             "relative_to_all_teacher": round(float(np.mean(correct)) / teacher_accuracy, 4)},
            "b77_answers_assumed_wrong": sum(a is None for a in answers),
            "escalated_share": {name: round(float(np.mean([e for _, e in choice[name]])), 4) for name in evaluated},
            "cost_usd_per_1k_requests": {}, "cost_relative_to_all_teacher": {},
        }
        for name in evaluated:
            spent = [cost(t, r, name) + (attempt_cost(t, r, name) if e else 0.0)
                     for r, (t, e) in zip(evaluated[name], choice[name])]
            baseline = [cost("teacher", r, name) for r in evaluated[name]]
            entry["cost_usd_per_1k_requests"][name] = round(1000 * float(np.mean(spent)), 6)
            entry["cost_relative_to_all_teacher"][name] = round(float(np.sum(spent) / np.sum(baseline)), 4)
        entry["note"] = "; ".join(notes[part] for part in note_keys(pname) if part in notes)
        results[pname] = entry
    return {"policies": results, "latency": latency(policies, routes, evaluated, outcomes, model),
            "teacher_b77_accuracy": round(teacher_accuracy, 4), "mean_strong_completion_tokens": mean_completion,
            "cascade": {"threshold": c_threshold, f"threshold_q{LOOSE_QUALITY}": loose, "confidence": c_note},
            "notes": notes}


def band_check_model(path: Path) -> tuple[object | None, float, str]:
    """The band check's confidence model on the teacher's logprobs (``python -m router calibrate-cascade
    --tier teacher --label teacher_correct --keep 0.95``), or None when it was not made."""
    from router.confidence import load_confidence

    if not path.is_file():
        return None, 1.0, "not made"
    loaded = load_confidence(path)
    return loaded.model, loaded.threshold, f"{path.relative_to(REPO)} (threshold {loaded.threshold:.4f}: " \
        f"{loaded.metadata.get('threshold_chosen_on', 'see its card')}, on {loaded.metadata.get('data', '?')})"


def decision_share(answer: dict) -> float:
    """Share of the student's answer generated by the time the cascade decides (its first line):
    a rejected attempt is charged its prompt and these tokens, not a whole answer."""
    tokens = answer.get("logprobs") or []
    return first_line_tokens(tokens) / max(1, len(tokens)) if tokens else 1.0


def plan_sizes() -> dict[str, int]:
    sizes = {name: sample_size(p) for name, p in PLANNING_P.items()}
    sizes["b77_val"] = B77_VAL
    return sizes


def plot(result: dict, path: Path) -> None:
    """Per policy: in scope on the student, out of scope on the strong tiers, accuracy vs all-teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["policies"])
    series = {
        "Banking77 test on student": [result["policies"][n]["b77_test_on_student"]["share"] for n in names],
        "HWU64 on teacher/flagship": [result["policies"][n]["hwu64_on_teacher_or_flagship"]["share"] for n in names],
        "MMLU on teacher/flagship": [result["policies"][n]["mmlu_on_teacher_or_flagship"]["share"] for n in names],
        "Banking77 accuracy / all-teacher": [result["policies"][n]["b77_accuracy"]["relative_to_all_teacher"] for n in names],
    }
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(12, 5))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [v or 0.0 for v in values], width, label=label)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("share")
    ax.set_title("Routing policies on real vLLM tiers (CPU): Banking77 in scope, HWU64 + MMLU out of scope")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["generate", "evaluate", "throughput"])
    parser.add_argument("--flagship-url", help="/v1 URL serving `teacher` (the merged support teacher, or the "
                        "LoRA process that also serves `flagship`)")
    parser.add_argument("--student-url", help="the student's /v1 URL")
    parser.add_argument("--tiers", default="student,teacher",
                        help="which tiers' answers to generate: student, teacher, flagship (the LoRA process)")
    parser.add_argument("--outcomes", type=Path, default=OUTCOMES)
    parser.add_argument("--confidence", type=Path, default=REPO / "artifacts" / "router" / "cascade_confidence.skops")
    parser.add_argument("--band-check", type=Path, default=REPO / "artifacts" / "router" / "band_check.skops")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.phase == "generate":
        sets = sample_sets(plan_sizes(), seed=args.seed)
        jobs = []
        if "student" in args.tiers.split(","):
            jobs += [("student", "student", args.student_url, r)
                     for name in ("b77_test", "hwu64", "mmlu", "b77_val") for r in sets[name]]
        if "teacher" in args.tiers.split(","):
            jobs += [("teacher", "teacher", args.flagship_url, r) for r in sets["b77_test"]]
            # Out of scope only the strong tiers' answer *lengths* matter (cost): a subsample.
            strong = "teacher"
            jobs += [(strong, strong, args.flagship_url, r)
                     for name, n in FLAGSHIP_SUBSAMPLE.items() for r in sets[name][:n]]
            jobs += [("teacher", "teacher", args.flagship_url, r) for r in sets["b77_val"]]
        if "flagship" in args.tiers:  # the LoRA process's base: Banking77 messages the gate sends it, + lengths
            gate = load_policies(args.confidence)[0]["competence_gate"]
            jobs += [("flagship", "flagship", args.flagship_url, r) for r in sets["b77_test"]
                     if gate(r["messages"]) == "flagship"]
            jobs += [("flagship", "flagship", args.flagship_url, r)
                     for name, n in FLAGSHIP_SUBSAMPLE.items() for r in sets[name][:n]]
        if "teacher_lp" in args.tiers.split(","):  # the band check reads the teacher's logprobs in the gate's band
            band = load_policies(args.confidence)[0]["competence~band"]
            jobs += [("teacher_lp", "teacher", args.flagship_url, r) for name in ("b77_test", "hwu64", "mmlu")
                     for r in sets[name] if band(r["messages"]) == "teacher"]
        args.outcomes.mkdir(parents=True, exist_ok=True)
        out = args.outcomes / f"outcomes.{args.tiers.replace(',', '+')}.jsonl"
        asyncio.run(generate(jobs, out, args.concurrency))
        return
    if args.phase == "throughput":  # on the LoRA process: base (flagship) vs adapter (teacher)
        measured = asyncio.run(throughput(args.flagship_url, ["flagship", "teacher"]))
        args.outcomes.mkdir(parents=True, exist_ok=True)
        (args.outcomes / "lora_throughput.json").write_text(json.dumps(
            {**measured, "load_average": os.getloadavg(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")}))
        log(f"lora throughput: {measured}")
        return
    lora = args.outcomes / "lora_throughput.json"
    merged = args.outcomes / "merged_throughput.json"  # throughput(url_of_merged_teacher, ["teacher"]), for comparison
    result = {"what": "routing policies side by side on each tier's real answers (vLLM, CPU, float32, greedy)",
              "data": {"b77_test": "Banking77 test (in scope; PolyAI, CC BY 4.0)",
                       "hwu64": "HWU64 test (out of scope; evaluation only; Liu et al. 2019, CC BY 4.0)",
                       "mmlu": "RouteLLM MMLU questions < 1200 chars, contaminated left out (out of scope; Apache-2.0)"},
              "sample_sizes": {"planned": plan_sizes(), "planning_share": PLANNING_P, "half_width": HALF_WIDTH,
                               "rule": "smallest n whose 95 % Wilson interval at the planning share is within "
                                       "+-3 points; every share below says whether its own interval is"},
              "serving": "student: its own vLLM process; teacher answers: the merged teacher dir (distill assemble: "
                         "the same adapter merged in float32) on two processes, one per core; flagship answers "
                         "(Banking77 messages the gate sends it, + out-of-scope lengths): the LoRA process "
                         "(base + adapter), as gateway/defaults.yaml serves it. float32, greedy, 12 streams each",
              "max_tokens": MAX_TOKENS, "prices_per_million": PRICES, **evaluate(args),
              "lora_serving_throughput": json.loads(lora.read_text()) if lora.is_file() else "not measured",
              "merged_teacher_throughput": json.loads(merged.read_text()) if merged.is_file() else "not measured",
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg()},
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, OUT.with_suffix(".png"))
    log(f"wrote {OUT}")


if __name__ == "__main__":
    main()
