"""``python -m router train | evaluate | score | calibrate-cascade | train-outcomes``.

Operators retrain when the student changes (distill/ writes new correctness CSVs), check an
artifact before shipping it, and poke at single prompts while debugging routing decisions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from router.artifact import load_router, save_router
from router.data import (
    RoutingData,
    default_mmlu_dir,
    grouped_split,
    load_contaminated,
    load_routing_data,
)
from router.defaults import DEFAULT_ARTIFACT, served_threshold
from router.evaluation import evaluate_router, measure_latency
from router.plot import plot_quality_cost
from router.training import train_router
from tierwise_common.data_dir import DATA_ENV_VAR, data_root

app = typer.Typer(help="tierwise complexity router: train, evaluate, score.", no_args_is_help=True)
console = Console(stderr=True)

DataOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--data", help="RouteLLM-format CSV files or folders (default: <repo>/../shared/data/routellm/mmlu)"),
]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help=f"shared data root (default: ${DATA_ENV_VAR} or <repo>/../shared/data)"),
]


def _load(data: list[Path] | None, data_dir: Path | None, cheap: str | None, strong: str | None, contaminated: bool) -> RoutingData:
    root = data_root(data_dir)
    paths = data or [root / "routellm" / "mmlu" if data_dir else default_mmlu_dir()]
    excluded: set[str] = set()
    cont_file = root / "routellm" / "mmlu_contaminated.jsonl"
    if contaminated and cont_file.is_file():
        excluded = load_contaminated(cont_file)
    return load_routing_data(paths, cheap, strong, exclude_prompts=excluded)


def _metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(col)
    for name, m in metrics.items():
        table.add_row(name, f"{m['apgr']:.3f}", f"{m['cpt50']:.1%}", f"{m['cpt80']:.1%}")
    return table


MIN_TRAIN_PROMPTS = 20


def _fail(message: str) -> None:
    """Stop with a readable message and exit code 2 (no traceback)."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


def _check_trainable(data: RoutingData, target: str) -> str:
    """The head target to fit, or a clear stop when the data cannot teach a router anything.

    A shadow export (``python -m gateway shadow export``) marks the reference tier correct on
    every row: its column is constant, so the right target is the cheap tier's own failures
    ("gap"), not a head per column (which would fit a one-class head).
    """
    if len(data) < MIN_TRAIN_PROMPTS:
        _fail(f"{len(data)} prompts; a router needs at least {MIN_TRAIN_PROMPTS} (collect more shadow pairs)")
    cheap_wrong = int((~data.cheap_correct.astype(bool)).sum())
    if cheap_wrong == 0 or (data.strong_correct.astype(bool) & ~data.cheap_correct.astype(bool)).sum() == 0:
        _fail(f"{data.cheap_model} is never wrong where {data.strong_model} is right in these {len(data)} prompts: "
              "only one class, nothing to route on. Collect pairs where they disagree, or export shadow pairs "
              "with a higher --agree-at.")
    if cheap_wrong == len(data):
        _fail(f"{data.cheap_model} is wrong on all {len(data)} prompts: only one class, nothing to route on.")
    constant = len(np.unique(data.strong_correct)) < 2 or len(np.unique(data.cheap_correct)) < 2
    if target == "auto":
        target = "gap" if constant else "outcomes"
        console.print(f"target: {target}" + (" (a correctness column is constant, as in a shadow export)" if constant else ""))
    elif target == "outcomes" and constant:
        _fail("--target outcomes fits one head per column, and a column is constant here; use --target gap (or auto)")
    return target


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="artifact path (.skops)")],
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    teacher_share: Annotated[float, typer.Option(help="share of calls the threshold sends to the teacher")] = 0.3,
    threshold: Annotated[Optional[float], typer.Option(help="set the threshold directly (overrides --teacher-share)")] = None,
    split: Annotated[str, typer.Option(help="'heldout': fit on the train split, report the test split; 'all': fit on everything")] = "heldout",
    test_size: Annotated[float, typer.Option(help="held-out share (prompts grouped: no prompt on both sides)")] = 0.2,
    seed: Annotated[int, typer.Option(help="split seed")] = 0,
    target: Annotated[str, typer.Option(help="head labels: auto | outcomes | gap | soft (auto: outcomes, or gap "
                                             "when a column is constant, e.g. the reference tier of a shadow export)")] = "auto",
    cheap_column: Annotated[Optional[str], typer.Option(help="correctness column of the cheap tier")] = None,
    strong_column: Annotated[Optional[str], typer.Option(help="correctness column of the strong tier")] = None,
    exclude_contaminated: Annotated[bool, typer.Option(help="drop prompts listed in mmlu_contaminated.jsonl")] = True,
) -> None:
    """Fit a router and write a skops artifact that records data, metrics and threshold."""
    with console.status("loading data"):
        try:
            data_all = _load(data, data_dir, cheap_column, strong_column, exclude_contaminated)
        except (ValueError, FileNotFoundError) as exc:
            _fail(f"cannot read the routing data: {exc}")
    console.print(f"loaded {len(data_all)} prompts, cheap={data_all.cheap_model}, strong={data_all.strong_model}")
    target = _check_trainable(data_all, target)
    if split not in ("heldout", "all"):
        raise typer.BadParameter("split must be 'heldout' or 'all'")
    test_mask = grouped_split(data_all.prompts, test_size, seed) if split == "heldout" else np.zeros(len(data_all), bool)
    train_data, test_data = data_all.subset(~test_mask), data_all.subset(test_mask)
    with console.status(f"fitting on {len(train_data)} prompts (heads, out-of-fold stack, meta-model)"):
        router = train_router(train_data, teacher_share=teacher_share, threshold=threshold, target=target, random_state=seed)
    router.metadata["split"] = {
        "kind": split, "test_size": test_size if split == "heldout" else 0.0, "seed": seed,
        "grouping": "identical prompt texts kept on one side", "n_train": len(train_data), "n_test": len(test_data),
        "contaminated_excluded": exclude_contaminated,
    }
    if split == "heldout":
        with console.status(f"evaluating on {len(test_data)} held-out prompts"):
            metrics, _ = evaluate_router(router, test_data, train_data)
            router.metadata["heldout_metrics"] = metrics
        console.print(_metrics_table(metrics, "held-out split"))
    save_router(router, out)
    console.print(f"[green]wrote[/green] {out}  threshold={router.threshold:.4f} ({router.metadata['threshold']['source']})")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="router artifact (.skops)")],
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option(help="'heldout': the artifact's own test split (same seed/size); 'all': every prompt")] = "heldout",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="metrics JSON path (default: next to the model)")] = None,
    png_out: Annotated[Optional[Path], typer.Option("--png", help="quality/cost curve PNG (default: next to the model)")] = None,
    cheap_column: Annotated[Optional[str], typer.Option()] = None,
    strong_column: Annotated[Optional[str], typer.Option()] = None,
    exclude_contaminated: Annotated[bool, typer.Option()] = True,
) -> None:
    """Print and write APGR / CPT(50%) / CPT(80%) for the router, random, subject prior and oracle."""
    router = load_router(model)
    with console.status("loading data"):
        data_all = _load(data, data_dir, cheap_column, strong_column, exclude_contaminated)
    meta_split = router.metadata.get("split", {})
    if split == "heldout" and meta_split.get("kind") == "heldout":
        test_mask = grouped_split(data_all.prompts, meta_split["test_size"], meta_split["seed"])
    elif split == "heldout":
        console.print("[yellow]artifact was trained on all data; evaluating on every prompt[/yellow]")
        test_mask = np.ones(len(data_all), bool)
    else:
        test_mask = np.ones(len(data_all), bool)
    train_data = data_all.subset(~test_mask) if (~test_mask).any() else None
    test_data = data_all.subset(test_mask)
    with console.status(f"scoring {len(test_data)} prompts"):
        metrics, scores = evaluate_router(router, test_data, train_data)
        latency = measure_latency(router, test_data.prompts[:500])
    console.print(_metrics_table(metrics, f"{model.name} on {len(test_data)} prompts"))
    console.print(f"latency per request: p50 {latency['p50_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms")
    json_out = json_out or model.with_suffix(".eval.json")
    png_out = png_out or model.with_suffix(".eval.png")
    result = {"model": str(model), "data": test_data.describe(), "split": split, "metrics": metrics, "latency": latency}
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    plot_quality_cost(scores, test_data.cheap_correct, test_data.strong_correct, png_out,
                      title=f"{model.stem}: quality vs. strong-model calls",
                      threshold_share=metrics["router"]["teacher_share_at_threshold"])
    print(json.dumps(result))
    console.print(f"[green]wrote[/green] {json_out} and {png_out}")


@app.command()
def score(
    text: Annotated[str, typer.Argument(help="the user prompt to score")],
    model: Annotated[Path, typer.Option("--model", help="router artifact (default: the one the gateway serves)")] = DEFAULT_ARTIFACT,
    threshold: Annotated[Optional[float], typer.Option(help="default: the gateway's for the default artifact, else the artifact's")] = None,
) -> None:
    """Score one prompt: P(cheap tier not good enough), the threshold, and the tier chosen,
    exactly as the gateway's default routing would."""
    router = load_router(model)
    s = router.score([{"role": "user", "content": text}])
    cut = served_threshold(threshold, router.threshold)
    tier = "teacher (strong)" if s >= cut else "student (cheap)"
    print(json.dumps({"score": round(s, 6), "threshold": round(cut, 6), "tier": tier, "model": str(model)}))


@app.command("calibrate-cascade")
def calibrate_cascade(
    outcomes: Annotated[Path, typer.Option("--outcomes", help="JSONL from benchmarks/cascade_outcomes.py "
                                           "(student logprobs + agreement with the teacher)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the confidence model (.skops)")] =
        Path("artifacts/router/cascade_confidence.skops"),
    quality: Annotated[float, typer.Option(help="cascade quality target: share of final answers agreeing "
                                           "with the teacher on the out-of-fold validation rows")] = 0.98,
    tier: Annotated[str, typer.Option(help="whose logprobs: student (the cascade) or teacher (the band check)")] =
        "student",
    label: Annotated[str, typer.Option(help="the outcome column: agree, teacher_correct, student_correct")] = "agree",
    keep: Annotated[Optional[float], typer.Option(help="instead of --quality: keep this share of the (in-scope) "
                                                  "rows above the threshold")] = None,
) -> None:
    """Fit the cascade's confidence model on student/teacher outcomes; threshold for a quality target."""
    from router.cascade_calibration import calibrate

    card = calibrate(outcomes, out, quality, tier=tier, label=label, keep=keep)
    console.print(f"[green]wrote[/green] {out}")
    print(json.dumps({k: card[k] for k in ("n", "agreement", "oof_roc_auc", "threshold", "operating_point")}))


@app.command("train-outcomes")
def train_outcomes(
    outcomes: Annotated[Path, typer.Option("--outcomes", help="JSONL from benchmarks/cascade_outcomes.py (the "
                                           "student's and teacher's answers on training-data prompts)")] =
        Path("benchmarks/results/cascade_outcomes_validation.jsonl"),
    competence: Annotated[Path, typer.Option("--competence", help="the student's competence index (the gate's)")] =
        Path("artifacts/tiers/student/competence.skops"),
    out: Annotated[Path, typer.Option("--out", help="where to write the router (.skops)")] =
        Path("artifacts/router/support_outcome_router.skops"),
    quality: Annotated[float, typer.Option(help="quality target: share of answers agreeing with the teacher on "
                                           "the out-of-fold rows")] = 0.98,
    leave_one_out: Annotated[bool, typer.Option(help="the outcome prompts are in the index (training prompts): "
                                                "skip each one's own copy")] = True,
) -> None:
    """Fit the router on our own tiers' outcomes (text + competence distance); threshold for a quality target."""
    from router.outcome_training import train_outcomes as train

    card = train(outcomes, competence, out, quality, leave_one_out)
    console.print(f"[green]wrote[/green] {out}")
    print(json.dumps({k: card[k] for k in ("n", "agreement", "oof_roc_auc", "threshold", "operating_point")}))


def main() -> None:
    app()
