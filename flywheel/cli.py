"""``python -m flywheel``: the loop's commands (``dataset`` for now)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="tierwise flywheel: captured traffic -> dataset -> student.", no_args_is_help=True,
                  add_completion=False)
console = Console(stderr=True)


@app.callback()
def _main() -> None:
    """(Sub-commands below.)"""


@app.command()
def dataset(
    workload: str = typer.Option(..., help="the workload's name (x-tierwise-workload)"),
    out: Path = typer.Option(..., "--out", help="folder; the dataset goes to OUT/WORKLOAD/"),
    ledger_url: str | None = typer.Option(None, "--ledger-url", help="ledger database (default: the gateway config's)"),
    config: Path | None = typer.Option(None, "--config", help="gateway config YAML (default: the embedded one)"),
    validation: float = typer.Option(0.1, min=0.0, max=0.5),
    test: float = typer.Option(0.1, min=0.0, max=0.5),
    seed: int = 0,
    near_duplicate_cosine: float = typer.Option(0.9, min=0.5, max=1.0, help="1.0: exact duplicates only"),
) -> None:
    """Captured records -> deduplicated, stratified train/validation/test chat JSONL."""
    from gateway.config import load_config
    from gateway.ledger.schema import LedgerNotFound, open_existing
    from flywheel.dataset import build_dataset, read_captures

    url = ledger_url or load_config(config).ledger.url
    try:
        engine = open_existing(url)
    except LedgerNotFound as exc:
        raise typer.BadParameter(str(exc), param_hint="--ledger-url") from None
    with console.status(f"reading the captures of {workload}"):
        report = build_dataset(read_captures(engine, workload), workload, out, validation=validation, test=test,
                               seed=seed, near_cosine=near_duplicate_cosine, source=engine.url.render_as_string())
    engine.dispose()
    if report.captured == 0:
        console.print(f"[red]no captured records for workload {workload!r}[/red] (is capture on for it?)")
        raise typer.Exit(2)
    console.print(f"{workload}: {report.captured} captured, {report.unusable} unusable, "
                  f"{report.exact_duplicates} exact and {report.near_duplicates} near duplicates removed, "
                  f"{report.labels} labels -> {report.counts} in {out / workload}")


@app.command("run")
def run_cmd(
    workload: str = typer.Option(..., help="the workload to make a student for"),
    out: Path = typer.Option(..., "--out", help="work dir: data/, student/, evaluation.json, report.json"),
    ledger_url: str | None = typer.Option(None, "--ledger-url", help="ledger database (default: the gateway config's)"),
    config: Path | None = typer.Option(None, "--config", help="gateway config YAML (default: the embedded one)"),
    student_layers: int = 6,
    trim_vocab: bool = typer.Option(True, "--trim-vocab/--no-trim-vocab",
                                    help="train the student on the vocabulary the captured data uses (trimmed "
                                    "before training): faster to train on a CPU and to serve"),
    epochs: float = 3.0,
    max_steps: int = typer.Option(-1, help="> 0: train this many steps (smoke runs)"),
    batch_size: int = 16,
    max_train: int | None = None,
    eval_n: int = 200,
    min_fraction: float = typer.Option(0.97, help="offline gate: share of the teacher's quality on the test split"),
    judge_url: str | None = typer.Option(None, help="the teacher as judge through the gateway (its /v1 URL; key in "
                                         "$TIERWISE_JUDGE_KEY): the offline gate reads the share it judges the same"),
    judge_model: str = typer.Option("teacher", help="the judge's tier"),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="a student that fails the offline gate alone "
                                 "is tried behind a cascade fitted on the validation split (the teacher answers "
                                 "what it is unsure of)"),
    cascade_min_share: float = typer.Option(0.2, min=0.0, max=1.0, help="the cascade must keep this share of the "
                                            "test split on the student"),
    canary_share: float = 0.2,
    canary_pairs: int = typer.Option(30, help="shadow pairs the canary must collect"),
    canary_agreement: float = typer.Option(0.9, help="online gate: mean shadow agreement with the teacher"),
    canary_timeout_s: float = 600.0,
    serve_url: str | None = typer.Option(None, help="the candidate is served here (default: the gateway starts vLLM)"),
    tier_name: str | None = None,
    teacher: str | None = typer.Option(None, help="the student's init: 'default' (packaged model) or a model dir; "
                                       "default: the captured tier's weights when --config serves it locally"),
    teacher_adapter: Path | None = typer.Option(None, help="a LoRA adapter merged into --teacher"),
) -> None:
    """Captured traffic -> dataset -> distill -> evaluate -> canary -> promote or roll back."""
    from gateway.config import load_config
    from gateway.ledger.schema import make_engine
    from flywheel.loop import LoopSettings, report_json, run_loop

    cfg = load_config(config)
    weak = next((t for t in cfg.model_list if t.model_name == cfg.router.weak_tier), None)
    settings = LoopSettings(workload=workload, out=out, student_layers=student_layers, trim_vocab=trim_vocab,
                            epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_train=max_train,
                            eval_n=eval_n, min_fraction=min_fraction, judge_url=judge_url, judge_model=judge_model,
                            cascade=cascade, cascade_min_share=cascade_min_share,
                            canary_share=canary_share, canary_pairs=canary_pairs,
                            canary_agreement=canary_agreement, canary_timeout_s=canary_timeout_s,
                            serve_url=serve_url, tier_name=tier_name, teacher=teacher, teacher_adapter=teacher_adapter,
                            **({"price": weak.price.model_dump()} if weak is not None and weak.price else {}))
    engine = make_engine(ledger_url or cfg.ledger.url)
    try:
        report = run_loop(engine, settings, log=lambda m: console.print(m, style="cyan", markup=False, soft_wrap=True),
                          gateway_config=cfg)
    finally:
        engine.dispose()
    (out / "report.json").write_text(report_json(report))
    console.print(f"{workload}: {report.outcome} (report: {out / 'report.json'})")
    if report.outcome in ("no_data", "failed"):
        raise typer.Exit(2)
