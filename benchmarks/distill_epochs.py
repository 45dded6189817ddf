"""Training length chosen on validation (issue #18 items 6 and the KD margin): the sweep's hard-label
and validation-chosen KD recipes trained for 8 and for 16 epochs (3 seeds each, one H200), the
epoch count of each recipe chosen by its mean *validation* accuracy, and the KD margin over
hard labels on test at the chosen counts.

Reads the GPU stage's raw files of ``benchmarks.distill_ablation --set sweep --epochs N``
(``distill_sweep_8ep_gpu_raw.json``, ``distill_sweep_16ep_gpu_raw.json``); writes
``benchmarks/results/distill_epochs.json`` and ``.png``. CPU only, no training:

    python -m benchmarks.distill_epochs
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.distill_ablation import runs_of

RAW = {8: RESULTS / "distill_sweep_8ep_gpu_raw.json", 16: RESULTS / "distill_sweep_16ep_gpu_raw.json"}
RECIPES = {"hard": "hard labels (gold, no teacher)", "kd_alpha0.5": "KD, alpha 0.5 (chosen on validation by the sweep)"}
TARGET_MARGIN_POINTS = 2.0


def stat(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n_seeds": len(values)}


def report(raw: dict[int, Path] = RAW) -> dict:
    table: dict[str, dict] = {}
    teacher = None
    for epochs, path in raw.items():
        steps = json.loads(Path(path).read_text())["steps"]
        teacher = teacher or steps["eval_teacher"]["test"]["intent_accuracy"]
        for name in RECIPES:
            runs = runs_of(steps, name)
            if runs:
                table.setdefault(name, {})[epochs] = {
                    split: stat([r[split]["intent_accuracy"] for r in runs.values()]) for split in ("validation", "test")}
    chosen = {name: max(rows, key=lambda e: rows[e]["validation"]["mean"]) for name, rows in table.items()}
    kd, hard = (table[n][chosen[n]]["test"]["mean"] for n in ("kd_alpha0.5", "hard"))
    margin = round(100 * (kd - hard), 2)
    return {
        "benchmark": "distill_epochs", "issue": 18, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipes": RECIPES, "teacher_test_accuracy": teacher,
        "accuracy_by_epochs": {n: {str(e): v for e, v in rows.items()} for n, rows in table.items()},
        "selection": "per recipe, the epoch count with the best mean validation accuracy (600 messages held out of "
                     "train before anything trained); test chooses nothing",
        "chosen_epochs": chosen,
        "kd_test_at_chosen": table["kd_alpha0.5"][chosen["kd_alpha0.5"]]["test"],
        "hard_test_at_chosen": table["hard"][chosen["hard"]]["test"],
        "kd_retention_of_teacher": round(kd / teacher, 4),
        "kd_minus_hard_test_points": margin,
        "target_points": TARGET_MARGIN_POINTS, "target_met": margin >= TARGET_MARGIN_POINTS,
    }


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, rows) in enumerate(doc["accuracy_by_epochs"].items()):
        epochs = sorted(rows, key=int)
        for split, style in (("validation", "--"), ("test", "-")):
            ax.errorbar([int(e) for e in epochs], [100 * rows[e][split]["mean"] for e in epochs],
                        yerr=[100 * (rows[e][split]["std"] or 0) for e in epochs], linestyle=style, marker="o",
                        color=f"C{i}", capsize=3, label=f"{name} ({split})")
    ax.axhline(100 * doc["teacher_test_accuracy"], color="grey", linewidth=1, label="teacher (test)")
    ax.set_xlabel("epochs")
    ax.set_ylabel("intent accuracy (%), mean +- std over 3 seeds")
    ax.set_title(f"KD - hard labels at the validation-chosen epochs: {doc['kd_minus_hard_test_points']:+.2f} points "
                 f"(target +{doc['target_points']:g})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    doc = report()
    (RESULTS / "distill_epochs.json").write_text(json.dumps(doc, indent=2))
    plot(doc, RESULTS / "distill_epochs.png")
    print(json.dumps({k: doc[k] for k in ("chosen_epochs", "kd_test_at_chosen", "hard_test_at_chosen",
                                          "kd_minus_hard_test_points", "target_met")}, indent=1))


if __name__ == "__main__":
    main()
