"""``python -m gateway``: serve the gateway (and, later, reports and keys)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
import uvicorn
from rich.console import Console
from rich.logging import RichHandler

from gateway.config import load_config

app = typer.Typer(help="tierwise: an OpenAI-compatible gateway that routes between distilled tiers.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(name)s: %(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    # httpx (litellm uses it) logs every upstream request at INFO: a log line per request.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (default: the embedded one)",
                                       exists=True, dir_okay=False),
    host: str | None = typer.Option(None, help="override server.host"),
    port: int | None = typer.Option(None, help="override server.port"),
) -> None:
    """Start the tiers and serve the OpenAI-compatible API until SIGINT/SIGTERM."""
    cfg = load_config(config)
    if host:
        cfg.server.host = host
    if port:
        cfg.server.port = port
    _setup_logging(cfg.server.log_level)
    from gateway.app import create_app

    console.print(f"[bold]tierwise[/] on http://{cfg.server.host}:{cfg.server.port}/v1 "
                  f"(tiers: {', '.join(t.model_name for t in cfg.model_list)}; ledger: {cfg.ledger.url})")
    uvicorn.run(create_app(cfg), host=cfg.server.host, port=cfg.server.port, log_level=cfg.server.log_level,
                access_log=False, loop="uvloop", http="httptools", timeout_graceful_shutdown=30, log_config=None)


@app.command("show-config")
def show_config(config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False)) -> None:
    """Print the effective configuration (placeholders expanded) as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(load_config(config).model_dump(mode="json"), sort_keys=False))


@app.command("stub-upstream")
def stub_upstream(host: str = "127.0.0.1", port: int = 9100, tokens: int = 16) -> None:
    """Run a fast fake OpenAI server (for overhead benchmarks and load tests)."""
    from gateway.devtools.stub_upstream import create_stub_app

    uvicorn.run(create_stub_app(tokens), host=host, port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")


def main() -> None:
    app()
