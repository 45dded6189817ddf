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
