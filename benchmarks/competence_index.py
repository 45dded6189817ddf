"""Competence index benchmark: does the student's index tell its scope from everything else?

Run from the repository root::

    python -m benchmarks.competence_index [--data-dir ../shared/data] [--mmlu-n 3000]

Fits every variant (feature set x k) on Banking77 *train* only, chooses one on data carved
from that train split only, then reports for every variant, on data it never saw:

* in scope: Banking77 test, share accepted (distance <= threshold);
* out of scope: HWU64 test (home assistant) and MMLU questions (contaminated ones left
  out), share rejected; ROC-AUC of the distance for in- vs out-of-scope;
* 95 % intervals: Wilson for shares, Hanley-McNeil for AUCs;
* scoring latency of ``distance_one`` (the gateway's path), p50/p99, short and long prompts,
  and one 1 MB prompt (the cap bounds it).

Selection, without any out-of-scope data: the "novel-intent" proxy. Some Banking77 train
intents are held out entirely; an index fitted on the other intents should place their
prompts further than held-out prompts of seen intents (AUC). The variant with the best
proxy AUC among those whose p50 latency is within budget wins. HWU64 and MMLU only report.

Writes ``benchmarks/results/competence_index.json`` and prints one summary line per variant.
Data: Banking77 (PolyAI, CC BY 4.0), HWU64 (Liu et al. 2019, CC BY 4.0), RouteLLM MMLU (Apache-2.0).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import REPO, wilson
from distill.data import SYSTEM_PROMPT, data_root
from router.competence import CompetenceIndex
from router.data import load_mmlu

VARIANTS = [{"features": f, "k": k} for f in ("word", "char", "word+char") for k in (1, 5, 10)]
TARGET_ACCEPTANCE = 0.95  # see README: leaves room for the router behind the gate in the >= 90 % target
CURVE = (0.90, 0.95, 0.98, 0.99)
LATENCY_BUDGET_P50_MS = 1.0
NOVEL_INTENT_SHARE = 0.2


def share(mask: np.ndarray) -> dict:
    return {"share": round(float(mask.mean()), 4), "ci95": wilson(int(mask.sum()), len(mask)), "n": int(len(mask))}


def auc_ci(in_scope: np.ndarray, out_scope: np.ndarray) -> dict:
    """ROC-AUC of distance (out of scope = positive) with the Hanley-McNeil 95 % interval."""
    y = np.r_[np.zeros(len(in_scope)), np.ones(len(out_scope))]
    auc = float(roc_auc_score(y, np.r_[in_scope, out_scope]))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    n1, n0 = len(out_scope), len(in_scope)
    se = math.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0))
    return {"auc": round(auc, 4), "ci95": [round(auc - 1.96 * se, 4), round(min(1.0, auc + 1.96 * se), 4)]}


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def latency_ms(index: CompetenceIndex, texts: list[str]) -> dict:
    index.distance_one(texts[0])  # builds the look-up tables once
    times = []
    for text in texts:
        t0 = time.perf_counter()
        index.distance_one([{"role": "user", "content": text}])
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50": round(float(np.median(times)), 3), "p99": round(float(np.quantile(times, 0.99)), 3), "n": len(texts)}


def novel_intent_auc(variant: dict, rows: list[dict], seed: int = 0) -> float:
    """Train-only proxy: held-out prompts of unseen intents vs held-out prompts of seen intents."""
    intents = sorted({r["category"] for r in rows})
    rng = random.Random(seed)
    novel = set(rng.sample(intents, int(round(len(intents) * NOVEL_INTENT_SHARE))))
    seen_rows = [r["text"] for r in rows if r["category"] not in novel]
    rng.shuffle(seen_rows)
    cut = len(seen_rows) // 10
    index = CompetenceIndex(**variant, known_prompts=(SYSTEM_PROMPT,)).fit(seen_rows[cut:])
    d_seen = index.distance(seen_rows[:cut])
    d_novel = index.distance([r["text"] for r in rows if r["category"] in novel])
    return float(roc_auc_score(np.r_[np.zeros(len(d_seen)), np.ones(len(d_novel))], np.r_[d_seen, d_novel]))


def evaluate(variant: dict, train: list[str], sets: dict[str, list[str]], latency_sets: dict[str, list[str]]) -> dict:
    t0 = time.perf_counter()
    index = CompetenceIndex(**variant, target_acceptance=TARGET_ACCEPTANCE, known_prompts=(SYSTEM_PROMPT,)).fit(train)
    fit_s = time.perf_counter() - t0
    d = {name: index.distance(texts) for name, texts in sets.items()}
    inside = d["banking77_test"]
    out = {"params": index.get_params(), "fit_seconds": round(fit_s, 1), "threshold": round(index.threshold_, 4),
           "validation_acceptance": round(index.validation_acceptance(), 4),
           "banking77_test_accepted": share(inside <= index.threshold_)}
    for name in ("hwu64_test", "mmlu"):
        out[f"{name}_rejected"] = share(d[name] > index.threshold_)
        out[f"auc_banking77_vs_{name}"] = auc_ci(inside, d[name])
    out["auc_banking77_vs_all_out_of_scope"] = auc_ci(inside, np.r_[d["hwu64_test"], d["mmlu"]])
    # The trade-off at other validation-chosen operating points (reported, not used to choose).
    out["curve"] = [{"target_acceptance": a, "threshold": round(index.threshold_for(a), 4),
                     "banking77_test_accepted": round(float(np.mean(inside <= index.threshold_for(a))), 4),
                     "hwu64_test_rejected": round(float(np.mean(d["hwu64_test"] > index.threshold_for(a))), 4),
                     "mmlu_rejected": round(float(np.mean(d["mmlu"] > index.threshold_for(a))), 4)} for a in CURVE]
    out["latency_ms"] = {name: latency_ms(index, texts) for name, texts in latency_sets.items()}
    huge = "please " * 150_000  # about 1 MB: the cap keeps it as cheap as a 2,000-character prompt
    t0 = time.perf_counter()
    index.distance_one([{"role": "user", "content": huge}])
    out["latency_ms"]["one_1MB_prompt"] = round((time.perf_counter() - t0) * 1e3, 3)
    out["distances"] = d
    return out


def default_chain(sets: dict[str, list[str]]) -> dict:
    """The gateway's default ``auto`` routing (competence gate -> support router), in process.

    Built by the gateway's own ``build_policy`` from the embedded defaults, so it measures
    what ``make serve`` routes; the router alone (the gate's inner policy) is the baseline.
    """
    from gateway.config import load_config
    from gateway.routing.build import build_policy

    chain = build_policy(load_config(None).router)
    out: dict = {"policy": chain.name}
    for name, policy in (("gate_then_router", chain), ("router_only", getattr(chain, "inner", chain))):
        tiers, times = {}, []
        for set_name, texts in sets.items():
            decisions = []
            for text in texts:
                t0 = time.perf_counter()
                decisions.append(policy.route([{"role": "user", "content": text}]).tier)
                times.append((time.perf_counter() - t0) * 1e3)
            tiers[set_name] = np.array(decisions)
        out[name] = {"banking77_test_on_student": share(tiers["banking77_test"] == "student"),
                     "hwu64_test_on_teacher": share(tiers["hwu64_test"] == "teacher"),
                     "mmlu_on_teacher": share(tiers["mmlu"] == "teacher"),
                     "decision_ms": {"p50": round(float(np.median(times)), 3),
                                     "p99": round(float(np.quantile(times, 0.99)), 3)}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--mmlu-n", type=int, default=3000, help="MMLU prompts sampled (seed 0)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "competence_index.json")
    ap.add_argument("--chain-only", action="store_true",
                    help="only (re)measure the default gate -> router chain and update that part of --out")
    args = ap.parse_args()
    root = data_root(args.data_dir)
    train_rows = read_rows(root / "banking77" / "train.csv")
    train = [r["text"] for r in train_rows]
    mmlu = sorted(set(load_mmlu(root).prompts))
    sets = {"banking77_test": [r["text"] for r in read_rows(root / "banking77" / "test.csv")],
            "hwu64_test": [r["text"] for r in read_rows(root / "hwu64" / "test.csv")],
            "mmlu": random.Random(0).sample(mmlu, min(args.mmlu_n, len(mmlu)))}
    latency_sets = {"banking77_test_short": sets["banking77_test"][:1000], "mmlu_long": sets["mmlu"][:300]}
    if args.chain_only:
        report = json.loads(args.out.read_text())
        report["default_chain"] = default_chain(sets)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report["default_chain"], indent=1))
        return

    results, proxies = [], {}
    for variant in VARIANTS:
        name = f"{variant['features']}/k={variant['k']}"
        proxies[name] = novel_intent_auc(variant, train_rows)
        r = evaluate(variant, train, sets, latency_sets)
        r.pop("distances")
        r["name"], r["novel_intent_auc_train_only"] = name, round(proxies[name], 4)
        results.append(r)
        print(f"{name:14s} proxy {proxies[name]:.4f} | val acc {r['validation_acceptance']:.3f} | "
              f"B77 acc {r['banking77_test_accepted']['share']:.3f} | HWU rej {r['hwu64_test_rejected']['share']:.3f} | "
              f"MMLU rej {r['mmlu_rejected']['share']:.3f} | AUC hwu {r['auc_banking77_vs_hwu64_test']['auc']:.4f} | "
              f"p50 {r['latency_ms']['banking77_test_short']['p50']:.3f} ms", flush=True)
    eligible = [r for r in results if r["latency_ms"]["banking77_test_short"]["p50"] <= LATENCY_BUDGET_P50_MS]
    chosen = max(eligible, key=lambda r: r["novel_intent_auc_train_only"])
    report = {
        "what": "competence index of the Banking77 support student: kNN cosine distance on TF-IDF n-grams",
        "fit_data": "banking77/train.csv (10,003 prompts); threshold from a 10 % validation split of it",
        "evaluation_data": {"banking77_test": "in scope, 3,080", "hwu64_test": "out of scope, 11,033 (evaluation only)",
                            "mmlu": f"out of scope, {len(sets['mmlu'])} sampled (seed 0) of {len(mmlu)} uncontaminated"},
        "target_acceptance": TARGET_ACCEPTANCE,
        "selection": ("highest novel-intent AUC (train split only: 20 % of intents held out) among variants with "
                      f"p50 <= {LATENCY_BUDGET_P50_MS} ms; test sets never used to choose"),
        "chosen": chosen["name"],
        "variants": results,
        "default_chain": default_chain(sets),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": [round(x, 1) for x in os.getloadavg()]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"chosen: {chosen['name']} -> {args.out}")


if __name__ == "__main__":
    main()
