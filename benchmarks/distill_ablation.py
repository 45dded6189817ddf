"""Distillation kinds side by side (issue #18): one GPU run, the same teacher, targets, student
init, data and steps for every recipe; only the loss differs.

The teacher is the shipped support teacher (the packaged SmolLM2-135M + the Banking77 LoRA
adapter in ``artifacts/tiers/teacher``); its greedy answers on the training messages are the
sequence-level targets of every KD recipe. The student is the 6-layer layer-dropped init.
Recipes (``VARIANTS``): hard labels, the shipped KD recipe (forward KL at T=2, alpha 0.9,
hidden-state cosine), and that recipe plus one kind each: relation-based (similarity between
a batch's examples; MiniLM token relations), attention transfer, multi-teacher (the support
teacher 0.7 + the general flagship 0.3), on-policy (GKD: lambda 0.5, JSD).

Honest selection: 600 training messages are held out as a validation split before anything
trains (the students never see them); every recipe trains the same fixed number of epochs
(``--epochs``, set before any result), and the best recipe is named by *validation* accuracy.
Test accuracy (Banking77's 3,080 test messages) is reported next to it and chooses nothing.

Run on the `device` tool (one GPU; resumable within a warm machine):

    python -m benchmarks.distill_ablation --work /tmp/ablation --data DATA --budget-s 540

Writes ``<work>/results.json`` (and ``$OUT/ablation_results.json``). The CPU report stage
(``--report FILE``) turns it into ``benchmarks/results/distill_ablation.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS

VAL_SIZE = 600
ADAPTER = REPO / "artifacts" / "tiers" / "teacher"
VARIANTS: dict[str, dict[str, Any]] = {
    "hard": {"loss.targets": "gold", "loss.alpha": 0.0},
    "kd": {},
    "kd_relation_batch": {"loss.relation_weight": 1.0},
    "kd_relation_minilm": {"loss.relation_weight": 1.0, "loss.relation": "minilm"},
    "kd_attention": {"loss.attention_weight": 1.0},
    "kd_multi_teacher": {"loss.teacher_weight": 0.7, "extra_flagship": 0.3},
    "kd_on_policy": {"loss.on_policy": 0.5, "loss.soft": "jsd"},
}


def split_validation(rows: list[dict], n: int = VAL_SIZE, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, validation): ``n`` rows held out at random (seeded), before any training."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def gpu_main(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.distill_gpu import GpuRun, Steps, hardware, kept_layers
    from distill.assemble import build_merged_teacher
    from distill.data import read_csv
    from distill.evaluate import accuracy, agreement, intent_correct
    from distill.modeling import decode_responses, generate_ids, load_model
    from distill.packaged import materialize_teacher
    from distill.recipe import ExtraTeacher, load_recipe
    from distill.student_init import layer_drop
    from distill.train import train_student

    torch.backends.cuda.matmul.allow_tf32 = True
    recipe = load_recipe(REPO / "distill" / "recipes" / "banking77_gpu.yaml")
    recipe.data.root = Path(args.data)
    recipe.train.epochs = args.epochs
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    S = Steps(work, args.budget_s)
    S.res.update(hardware=hardware(), recipe=recipe.model_dump(mode="json"), epochs=args.epochs,
                 selection="epochs fixed before any run; best recipe by validation accuracy (600 held-out "
                           "training messages); test chooses nothing")
    all_rows = read_csv(recipe.data.train_path(), limit=args.max_train)
    train_rows, val_rows = split_validation(all_rows, min(VAL_SIZE, len(all_rows) // 5))
    base = materialize_teacher(work / "base-teacher")
    teacher_dir = work / "teacher"
    if not (teacher_dir / "config.json").is_file():
        build_merged_teacher(base, ADAPTER, teacher_dir, "shipped-adapter")

    class AblationRun(GpuRun):
        def evaluate(self, name: str, model_dir: Path, fp16: bool) -> dict:
            """Intent accuracy on validation and test; agreement with the teacher on both."""
            from benchmarks.distill_gpu import round_fp16_

            m = load_model(model_dir, torch.float32)
            if fp16:
                round_fp16_(m)
            out: dict = {}
            for split, rows in (("validation", val_rows), ("test", self.test_rows)):
                ids = generate_ids(m, self.tok, [r["text"] for r in rows], args.max_new_tokens, args.gen_batch)
                replies = decode_responses(self.tok, ids)
                (self.preds_dir / f"{name}-{split}.json").write_text(json.dumps(replies))
                res = {"intent_accuracy": accuracy(intent_correct(replies, [r["category"] for r in rows])),
                       "n": len(rows)}
                teacher_file = self.preds_dir / f"teacher-{split}.json"
                if name != "teacher" and teacher_file.is_file():
                    res.update(agreement(replies, json.loads(teacher_file.read_text())))
                out[split] = res
            del m
            torch.cuda.empty_cache()
            return out

        def train_eval(self, name: str, variant: dict[str, Any], **_: Any) -> dict:
            r = self.recipe.model_copy(deep=True)
            extra_weight = variant.get("extra_flagship")
            for k, v in variant.items():
                if k == "extra_flagship":
                    r.loss.extra_teachers = [ExtraTeacher(model=str(base), weight=v)]
                    continue
                sect, key = k.split(".")
                setattr(getattr(r, sect), key, v)
            teacher_model = load_model(self.teacher_dir, torch.bfloat16) if r.loss.targets == "teacher" else None
            extra = [(load_model(base, torch.bfloat16), extra_weight)] if extra_weight else []
            ex = self.examples_for(r.loss.targets)
            out_dir = self.work / "students" / name
            stats = train_student(self.init_dir, teacher_model, self.tok, ex, r, out_dir, kept_layers(self.init_dir),
                                  extra_teachers=extra)
            del teacher_model, extra
            torch.cuda.empty_cache()
            res = self.evaluate(name, out_dir / "model", fp16=True)
            last = next((h for h in reversed(stats["history"]) if "loss" in h), None)
            res.update({"train_seconds": stats["train_seconds"], "steps": stats["steps"], "last_log": last,
                        "variant": {k: v for k, v in variant.items()}})
            shutil.rmtree(out_dir, ignore_errors=True)  # the figures are what comes back
            return res

    run = AblationRun(args, recipe, work, teacher_dir, train_rows)
    run.test_rows = read_csv(recipe.data.eval_path(), limit=args.max_eval)
    S.run("eval_teacher", 30, lambda: run.evaluate("teacher", teacher_dir, False))
    S.run("teacher_targets", 60, run.make_targets)
    if not (run.init_dir / "config.json").is_file():
        layer_drop(teacher_dir, run.init_dir, recipe.student.layers)
    for seed in args.seeds:
        for name in args.variants:
            key = f"{name}_seed{seed}"
            S.run(key, args.step_estimate_s, lambda name=name, seed=seed, key=key: run.train_eval(
                key, {**VARIANTS[name], "train.seed": seed}))
    S.save()
    out = Path(os.environ.get("OUT", work))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "results.json", out / "ablation_results.json")
    print(json.dumps({k: v.get("test", {}).get("intent_accuracy") if isinstance(v, dict) else None
                      for k, v in S.res["steps"].items()}, indent=1))


def report(path: Path) -> dict:
    """Per recipe: accuracy (validation, test) over seeds, agreement, train time; the validation-chosen best."""
    res = json.loads(Path(path).read_text())
    steps = res["steps"]
    table: dict[str, dict] = {}
    for name in VARIANTS:
        runs = [v for k, v in steps.items() if k.startswith(name + "_seed")]
        if not runs:
            continue

        def stat(split: str, key: str) -> dict:
            values = [r[split][key] for r in runs if key in r[split]]
            if not values:
                return {}
            return {"mean": round(statistics.mean(values), 4),
                    "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n_seeds": len(values)}

        table[name] = {"validation_accuracy": stat("validation", "intent_accuracy"),
                       "test_accuracy": stat("test", "intent_accuracy"),
                       "test_label_agreement_with_teacher": stat("test", "label_agreement"),
                       "test_rouge_l_to_teacher": stat("test", "rouge_l"),
                       "train_seconds": round(statistics.mean(r["train_seconds"] for r in runs), 1),
                       "variant": runs[0]["variant"]}
    kd_kinds = {k: v for k, v in table.items() if k != "hard"}
    best = max(kd_kinds, key=lambda k: kd_kinds[k]["validation_accuracy"]["mean"]) if kd_kinds else None
    teacher = steps.get("eval_teacher", {})
    hard = table.get("hard", {}).get("test_accuracy", {}).get("mean")
    summary = {
        "teacher_test_accuracy": teacher.get("test", {}).get("intent_accuracy"),
        "best_by_validation": best,
        "best_test_accuracy": table[best]["test_accuracy"] if best else None,
        "best_minus_hard_points": round(100 * (table[best]["test_accuracy"]["mean"] - hard), 2) if best and hard else None,
        "retention_of_teacher": round(table[best]["test_accuracy"]["mean"] / teacher["test"]["intent_accuracy"], 4)
        if best and teacher.get("test") else None,
    }
    return {"benchmark": "distill_ablation", "hardware": res.get("hardware"), "epochs": res.get("epochs"),
            "selection": res.get("selection"), "summary": summary, "recipes": table,
            "teacher_targets": steps.get("teacher_targets")}


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["recipes"])
    val = [100 * doc["recipes"][n]["validation_accuracy"]["mean"] for n in names]
    test = [100 * doc["recipes"][n]["test_accuracy"]["mean"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], val, 0.4, label="validation (chooses)")
    ax.bar([i + 0.2 for i in x], test, 0.4, label="test (reported)")
    if doc["summary"]["teacher_test_accuracy"]:
        ax.axhline(100 * doc["summary"]["teacher_test_accuracy"], color="k", ls="--", lw=1, label="teacher (test)")
    ax.set_xticks(list(x), names, rotation=25, ha="right")
    ax.set_ylabel("Banking77 intent accuracy (%)")
    ax.set_ylim(min(val + test) - 3, 100)
    ax.set_title(f"6-layer students, {doc['epochs']} epochs each, one GPU")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/ablation")
    p.add_argument("--data", default=None, help="data root holding banking77/")
    p.add_argument("--budget-s", type=float, default=540)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--step-estimate-s", type=float, default=70)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--gen-batch", type=int, default=512)
    p.add_argument("--max-eval", type=int, default=None)
    p.add_argument("--max-train", type=int, default=None, help="smoke tests on the CPU")
    p.add_argument("--report", default=None, help="CPU: a returned ablation_results.json to turn into the results")
    args = p.parse_args()
    if args.report:
        doc = report(Path(args.report))
        doc["when"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (RESULTS / "distill_ablation.json").write_text(json.dumps(doc, indent=2))
        plot(doc, RESULTS / "distill_ablation.png")
        print(json.dumps(doc["summary"], indent=1))
        return
    gpu_main(args)


if __name__ == "__main__":
    main()
