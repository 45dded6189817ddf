"""Training length chosen on validation (issue #18 items 6 and the KD margin): the sweep's hard-label
and validation-chosen KD recipes trained for 8, 16 and 32 epochs (3 seeds each; one H200), the
epoch count of each recipe chosen by its mean *validation* accuracy, and the KD margin over hard
labels on test at the chosen counts, with its seed-level interval.

Reads every GPU raw file of ``benchmarks.distill_ablation --set sweep --epochs N`` present in
``benchmarks/results`` (``distill_sweep_<N>ep_gpu_raw.json``); writes
``benchmarks/results/distill_epochs.json`` and ``.png``. CPU only, no training:

    python -m benchmarks.distill_epochs

Selection: per recipe, among the epoch counts where it has its full seed set, the one with the
best mean validation accuracy (ties: fewer epochs); test accuracy chooses nothing. The test margin
at every epoch count is listed too, for reading only.

The 32-epoch runs ran as concurrent processes on the one GPU (one process per recipe and seed,
each in its own work dir seeded with the same teacher, targets and init); ``--merge`` joins
their ``results.json`` files into one raw file of the usual shape:

    python -m benchmarks.distill_epochs --merge OUT.json --note TEXT WORK_DIR...
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.distill_ablation import runs_of

RAW_PATTERN = re.compile(r"distill_sweep_(\d+)ep_gpu_raw\.json")
RECIPES = {"hard": "hard labels (gold, no teacher)", "kd_alpha0.5": "KD, alpha 0.5 (chosen on validation by the sweep)"}
TARGET_MARGIN_POINTS = 2.0


def raw_files(results: Path = RESULTS) -> dict[int, Path]:
    """Every ``distill_sweep_<N>ep_gpu_raw.json`` present, by epoch count (ascending)."""
    found = {int(m.group(1)): p for p in results.glob("distill_sweep_*ep_gpu_raw.json")
             if (m := RAW_PATTERN.fullmatch(p.name))}
    return dict(sorted(found.items()))


def stat(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n_seeds": len(values)}


def points(a: float, b: float) -> float:
    return round(100 * (a - b), 2)


def margin_interval(kd: dict, hard: dict) -> dict:
    """Standard error and Welch 95 % interval of the difference of two seed means, in points.

    With 3 seeds a side the interval is wide (t with ~2-4 degrees of freedom): it says how far
    the seed-to-seed spread alone could move the margin, not what another data split would do.
    """
    from scipy import stats as scipy_stats

    va, vb = (kd["std"] or 0) ** 2 / kd["n_seeds"], (hard["std"] or 0) ** 2 / hard["n_seeds"]
    se = math.sqrt(va + vb)
    if se == 0:
        return {"standard_error_points": 0.0, "welch_df": None, "ci95_points": None}
    df = (va + vb) ** 2 / (va ** 2 / (kd["n_seeds"] - 1) + vb ** 2 / (hard["n_seeds"] - 1))
    half = scipy_stats.t.ppf(0.975, df) * se
    diff = kd["mean"] - hard["mean"]
    return {"standard_error_points": round(100 * se, 2), "welch_df": round(df, 1),
            "ci95_points": [round(100 * (diff - half), 2), round(100 * (diff + half), 2)]}


def report(raw: dict[int, Path] | None = None) -> dict:
    raw = dict(sorted((raw if raw is not None else raw_files()).items()))
    table: dict[str, dict] = {}
    seeds: dict[str, dict[int, list[int]]] = {}
    runs_info: dict[str, dict] = {}
    teacher = None
    for epochs, path in raw.items():
        res = json.loads(Path(path).read_text())
        steps = res["steps"]
        teacher = teacher or steps["eval_teacher"]["test"]["intent_accuracy"]
        info: dict = {"file": Path(path).name, "hardware": res.get("hardware")}
        if res.get("runs"):
            info["runs"] = res["runs"]
        for name in RECIPES:
            runs = runs_of(steps, name)
            if runs:
                table.setdefault(name, {})[epochs] = {
                    split: stat([r[split]["intent_accuracy"] for r in runs.values()]) for split in ("validation", "test")}
                secs = [r["seconds"] for r in runs.values()]
                table[name][epochs]["wall_seconds_per_run"] = {"mean": round(statistics.mean(secs), 1),
                                                               "max": max(secs), "n_runs": len(secs)}
                seeds.setdefault(name, {})[epochs] = sorted(runs)
        runs_info[str(epochs)] = info
    # a recipe's epoch counts are compared on its full seed set only (no mean over fewer seeds)
    full = {n: max((set(s) for s in by_e.values()), key=len) for n, by_e in seeds.items()}
    eligible = {n: [e for e in rows if set(seeds[n][e]) >= full[n]] for n, rows in table.items()}
    for n, rows in table.items():
        for e, row in rows.items():
            row["eligible_for_selection"] = e in eligible[n]
    # validation chooses; ties go to fewer epochs (ascending order, first max wins)
    chosen = {n: max(eligible[n], key=lambda e, n=n: table[n][e]["validation"]["mean"]) for n in table}
    missing = {n: {str(e): sorted(full[n] - set(seeds[n][e])) for e in rows if e not in eligible[n]}
               for n, rows in table.items()}
    kd, hard = (table[n][chosen[n]]["test"]["mean"] for n in ("kd_alpha0.5", "hard"))
    margin = points(kd, hard)
    same_epochs = sorted(set(table["kd_alpha0.5"]) & set(table["hard"]))
    return {
        "benchmark": "distill_epochs", "issue": 18, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipes": RECIPES, "teacher_test_accuracy": teacher,
        "epochs_read": list(raw),
        "accuracy_by_epochs": {n: {str(e): v for e, v in rows.items()} for n, rows in table.items()},
        "seeds_by_epochs": {n: {str(e): s for e, s in by_e.items()} for n, by_e in seeds.items()},
        "selection": "per recipe, the epoch count with the best mean validation accuracy (600 messages held out of "
                     "train before anything trained), among the counts where the recipe has its full seed set; "
                     "ties go to fewer epochs; test chooses nothing",
        "chosen_epochs": chosen,
        "seeds_missing_so_not_eligible": {n: m for n, m in missing.items() if m},
        "kd_validation_at_chosen": table["kd_alpha0.5"][chosen["kd_alpha0.5"]]["validation"],
        "hard_validation_at_chosen": table["hard"][chosen["hard"]]["validation"],
        "kd_test_at_chosen": table["kd_alpha0.5"][chosen["kd_alpha0.5"]]["test"],
        "hard_test_at_chosen": table["hard"][chosen["hard"]]["test"],
        "kd_retention_of_teacher": round(kd / teacher, 4),
        "kd_minus_hard_test_points": margin,
        "kd_minus_hard_test_interval": margin_interval(table["kd_alpha0.5"][chosen["kd_alpha0.5"]]["test"],
                                                       table["hard"][chosen["hard"]]["test"]),
        "target_points": TARGET_MARGIN_POINTS, "target_met": margin >= TARGET_MARGIN_POINTS,
        "kd_minus_hard_test_points_by_epochs_read_only": {
            str(e): {"points": points(table["kd_alpha0.5"][e]["test"]["mean"], table["hard"][e]["test"]["mean"]),
                     "kd_seeds": seeds["kd_alpha0.5"][e], "hard_seeds": seeds["hard"][e]}
            for e in same_epochs},
        "runs": runs_info,
    }


def merge(out: Path, works: list[Path], note: str | None = None) -> dict:
    """Join per-process work dirs (each ``results.json``: the shared ``eval_teacher`` and
    ``teacher_targets`` steps + its own runs) of one epoch count into one raw file."""
    merged: dict = {"steps": {}}
    wall: dict[str, float] = {}
    for w in works:
        res = json.loads((Path(w) / "results.json").read_text())
        for k in ("variant_set", "hardware", "recipe", "epochs", "selection"):
            if k in res:
                if k in merged and merged[k] != res[k] and k != "hardware":
                    raise SystemExit(f"{w}: {k} differs from the other work dirs")
                merged.setdefault(k, res[k])
        for k, v in res["steps"].items():
            if k in merged["steps"]:
                if k not in ("eval_teacher", "teacher_targets"):
                    raise SystemExit(f"{w}: step {k} is in two work dirs")
                continue
            merged["steps"][k] = v
            if k not in ("eval_teacher", "teacher_targets"):
                wall[k] = v["seconds"]
    merged["runs"] = {"processes": len(wall), "wall_seconds": wall,
                      "note": note or "one process per run; wall seconds include training and evaluation"}
    Path(out).write_text(json.dumps(merged, indent=2))
    return merged


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (name, rows) in enumerate(doc["accuracy_by_epochs"].items()):
        epochs = sorted(rows, key=int)
        for split, style in (("validation", "--"), ("test", "-")):
            ax.errorbar([int(e) for e in epochs], [100 * rows[e][split]["mean"] for e in epochs],
                        yerr=[100 * (rows[e][split]["std"] or 0) for e in epochs], linestyle=style, marker="o",
                        color=f"C{i}", capsize=3, label=f"{name} ({split})")
        for e in epochs:  # too few seeds to be chosen: hollow, with the seed count
            if not rows[e].get("eligible_for_selection", True):
                for split in ("validation", "test"):
                    y = 100 * rows[e][split]["mean"]
                    ax.plot([int(e)], [y], marker="o", markersize=9, markerfacecolor="white", color=f"C{i}")
                    ax.annotate(f"{rows[e][split]['n_seeds']} seed", (int(e), y), textcoords="offset points",
                                xytext=(-8, 7), fontsize=7, color=f"C{i}", ha="right")
        c = doc["chosen_epochs"][name]
        ax.plot([c], [100 * rows[str(c)]["validation"]["mean"]], marker="*", markersize=14, color=f"C{i}",
                linestyle="none", label=f"{name}: chosen on validation ({c} ep)")
    ax.axhline(100 * doc["teacher_test_accuracy"], color="grey", linewidth=1, label="teacher (test)")
    ax.set_xticks(doc["epochs_read"])
    ax.set_xlabel("epochs")
    ax.set_ylabel("intent accuracy (%), mean +- std\nover 3 seeds (hollow: fewer)")
    ax.set_title(f"KD - hard labels at the validation-chosen epochs: {doc['kd_minus_hard_test_points']:+.2f} points "
                 f"(target +{doc['target_points']:g})", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--merge", default=None, help="write one raw file from the WORK_DIRs' results.json and stop")
    p.add_argument("--note", default=None, help="with --merge: how the runs were made (kept in the raw file)")
    p.add_argument("works", nargs="*", type=Path)
    args = p.parse_args()
    if args.merge:
        m = merge(Path(args.merge), args.works, args.note)
        print(json.dumps(m["runs"], indent=1))
        return
    doc = report()
    (RESULTS / "distill_epochs.json").write_text(json.dumps(doc, indent=2))
    plot(doc, RESULTS / "distill_epochs.png")
    print(json.dumps({k: doc[k] for k in ("epochs_read", "chosen_epochs", "kd_test_at_chosen", "hard_test_at_chosen",
                                          "kd_minus_hard_test_points", "target_met")}, indent=1))


if __name__ == "__main__":
    main()
