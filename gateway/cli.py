"""``python -m gateway``: serve the gateway, manage API keys, write cost reports."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import typer
import uvicorn
from rich.console import Console

from gateway.config import load_config
from gateway.logging_setup import setup_logging

app = typer.Typer(help="tierwise: an OpenAI-compatible gateway that routes between distilled tiers.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


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
    setup_logging(cfg.server.log_level)
    from gateway.workers import check_shareable, serve_workers, worker_count

    workers = worker_count(cfg)
    try:
        check_shareable(cfg, workers)
        litellm_tiers = [t.model_name for t in cfg.model_list if t.litellm]
        if litellm_tiers:  # the module is cheap; litellm itself is only looked up, not imported
            from gateway.tiers.litellm_provider import require_litellm

            for name in litellm_tiers:
                require_litellm(name)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None

    console.print(f"[bold]tierwise[/] on http://{cfg.server.host}:{cfg.server.port}/v1 "
                  f"(tiers: {', '.join(t.model_name for t in cfg.model_list)}; ledger: {cfg.ledger.url}"
                  + (f"; {workers} worker processes" if workers > 1 else "") + ")")
    if workers > 1:
        serve_workers(cfg, workers)
        return
    from gateway.app import create_app
    from gateway.http_timeouts import header_timeout_protocol

    uvicorn.run(create_app(cfg), host=cfg.server.host, port=cfg.server.port, log_level=cfg.server.log_level,
                access_log=False, loop="uvloop", http=header_timeout_protocol(cfg.server.header_read_timeout_s),
                timeout_graceful_shutdown=30, log_config=None)


@app.command("supervise-tiers", hidden=True)
def supervise_tiers(config_json: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Start and watch vLLM tiers for multi-worker serving (run by ``serve``; see gateway/workers.py)."""
    from gateway.config import GatewayConfig
    from gateway.workers import supervise_tiers as run

    cfg = GatewayConfig.model_validate_json(config_json.read_text())
    setup_logging(cfg.server.log_level)
    asyncio.run(run(cfg))


@app.command("show-config")
def show_config(config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False)) -> None:
    """Print the effective configuration (placeholders expanded) as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(load_config(config).model_dump(mode="json"), sort_keys=False))


def _when(value: str | None, option: str) -> datetime | None:
    """ISO date or date-time; no offset means UTC."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time (e.g. 2026-03-01 or 2026-03-01T12:00Z)",
                                 param_hint=option) from None


@app.command()
def report(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                       help="YAML config whose ledger to read (default: the embedded one)"),
    ledger_url: str | None = typer.Option(None, "--ledger-url", help="ledger database URL (overrides the config)"),
    since: str | None = typer.Option(None, help="ISO date/time, UTC unless an offset is given; inclusive"),
    until: str | None = typer.Option(None, help="ISO date/time, UTC unless an offset is given; exclusive"),
    key: str | None = typer.Option(None, "--key", help="only this API key id"),
    formats: list[str] = typer.Option(["html"], "--format", "-f", help="html, md, csv or json; repeat for several"),
    out: Path | None = typer.Option(None, "--out", "-o", file_okay=False, help="output folder (default: <state_dir>/reports)"),
    bucket: str = typer.Option("day", help="time bucket of the tables and plots: day or hour"),
    currency: str = typer.Option("$", help="currency sign in the human-readable formats"),
    by: str = typer.Option("key", "--by", help="second breakdown next to the tiers: key, user, workload or tier"),
) -> None:
    """Write a cost report (spend, teacher counterfactual, savings, latency, routing) from the ledger."""
    from gateway.ledger.schema import LedgerNotFound
    from gateway.reports.data import Filters
    from gateway.reports.render_text import print_summary
    from gateway.reports.run import FORMATS, generate

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)}: choose from {', '.join(FORMATS)}", param_hint="--format")
    if bucket not in ("day", "hour"):
        raise typer.BadParameter("day or hour", param_hint="--bucket")
    if by not in ("key", "user", "workload", "tier"):
        raise typer.BadParameter("key, user, workload or tier", param_hint="--by")
    cfg = load_config(config)
    try:
        filters = Filters(_when(since, "--since"), _when(until, "--until"), key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = out or Path(cfg.state_dir) / "reports"
    try:
        result, written = generate(ledger_url or cfg.ledger.url, filters, formats, out,  # type: ignore[arg-type]
                                   teacher_tier=cfg.teacher_tier, bucket=bucket, currency=currency,  # type: ignore[arg-type]
                                   group_by=by)  # type: ignore[arg-type]
    except LedgerNotFound as exc:  # read-only: a mistyped path must not become an empty ledger
        raise typer.BadParameter(str(exc), param_hint="--ledger-url / the config's ledger.url") from None
    stdout = Console()
    print_summary(result, stdout, currency)
    for path in written:
        stdout.print(f"wrote {path}")


@app.command("stub-upstream")
def stub_upstream(host: str = "127.0.0.1", port: int = 9100, tokens: int = 16,
                  token_delay_ms: float = typer.Option(0.0, help="pause before each streamed token"),
                  word: str = typer.Option("tok", help="the word every answer repeats")) -> None:
    """Run a fast fake OpenAI server (for overhead benchmarks and load tests)."""
    from gateway.devtools.stub_upstream import create_stub_app

    uvicorn.run(create_stub_app(tokens, token_delay_ms / 1000, word), host=host, port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")


keys_app = typer.Typer(help="Create, list and revoke API keys (stored hashed in the ledger database).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_store(config: Path | None, ledger_url: str | None):
    from gateway.auth.keys import KeyStore
    from gateway.ledger.schema import make_engine

    return KeyStore(make_engine(ledger_url or load_config(config).ledger.url))


_CONFIG_OPT = typer.Option(None, "--config", "-c", exists=True, dir_okay=False, help="gateway config")
_LEDGER_OPT = typer.Option(None, "--ledger-url", help="database URL (default: the config's ledger)")


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="who or what the key is for"),
    admin: bool = typer.Option(False, help="may manage keys and see every key's costs"),
    rpm: int | None = typer.Option(None, help="requests per minute"),
    tpm: int | None = typer.Option(None, help="tokens per minute"),
    budget: float | None = typer.Option(None, help="money per --budget-period"),
    budget_period: str | None = typer.Option(None, help="day or month"),
    capture: bool = typer.Option(False, help="opt this key's traffic in to content capture (capture: in the config)"),
    config: Path | None = _CONFIG_OPT,
    ledger_url: str | None = _LEDGER_OPT,
) -> None:
    """Create a key and print its secret once (it is stored only as a hash)."""
    try:
        key, secret = _key_store(config, ledger_url).create(name, admin=admin, rpm=rpm, tpm=tpm, budget=budget,
                                                            budget_period=budget_period, capture=capture)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"created [bold]{key.id}[/] ({name}{', admin' if admin else ''}); the secret is shown once:")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT,
              as_json: bool = typer.Option(False, "--json", help="one JSON document instead of a table")) -> None:
    """List keys (never their secrets)."""
    import json

    from rich.table import Table

    keys = _key_store(config, ledger_url).list()
    if as_json:
        typer.echo(json.dumps([k.public() for k in keys], indent=2))
        return
    table = Table("id", "name", "prefix", "admin", "rpm", "tpm", "budget", "created", "revoked")
    for k in keys:
        table.add_row(k.id, k.name, k.prefix + "…", "yes" if k.admin else "", str(k.rpm or ""), str(k.tpm or ""),
                      f"{k.budget:g}/{k.budget_period}" if k.budget else "", f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """Revoke a key; every gateway replica refuses it within auth.cache_ttl_s."""
    if not _key_store(config, ledger_url).revoke(key_id):
        console.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


shadow_app = typer.Typer(help="Shadow pairs (student answers re-asked of the teacher).", no_args_is_help=True)
app.add_typer(shadow_app, name="shadow")


@shadow_app.command("export")
def shadow_export(
    out: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="CSV to write"),
    config: Path | None = _CONFIG_OPT,
    ledger_url: str | None = _LEDGER_OPT,
    agree_at: float | None = typer.Option(None, help="agreement counted as 'student correct' (default: config)"),
) -> None:
    """Write shadow pairs in RouteLLM's format (prompt, one True/False column per tier) for
    `python -m router train --data`: the teacher is taken as right, the student as right when it
    agreed with the teacher."""
    from gateway.ledger.schema import LedgerNotFound, open_existing
    from gateway.shadow.export import export_routellm

    cfg = load_config(config)
    try:
        engine = open_existing(ledger_url or cfg.ledger.url)
    except LedgerNotFound as exc:  # read-only: a mistyped path must not become an empty ledger
        raise typer.BadParameter(str(exc), param_hint="--ledger-url / the config's ledger.url") from None
    n = export_routellm(engine, out, cfg.shadow.agree_at if agree_at is None else agree_at)
    console.print(f"wrote {n} pairs to {out}")


def main() -> None:
    app()


capture_app = typer.Typer(help="Captured teacher answers (the flywheel's data): counts and retention.",
                          no_args_is_help=True)
app.add_typer(capture_app, name="capture")


def _capture_store(config: Path | None, ledger_url: str | None):
    from gateway.capture.store import CaptureStore
    from gateway.ledger.schema import make_engine

    cfg = load_config(config)
    return CaptureStore(make_engine(ledger_url or cfg.ledger.url), cfg.capture)


@capture_app.command("stats")
def capture_stats(config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """Captured records per workload."""
    counts = _capture_store(config, ledger_url).counts()
    if not counts:
        console.print("no captured records")
    for workload, count in sorted(counts.items()):
        typer.echo(f"{workload}\t{count}")


@capture_app.command("purge")
def capture_purge(config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """Delete captured records older than capture.retention_days (the gateway also does this hourly)."""
    store = _capture_store(config, ledger_url)
    deleted = store.purge_expired()
    console.print(f"purged {deleted} records older than {store.config.retention_days:g} days")


runtime_app = typer.Typer(help="Runtime tiers and workload routes: every replica follows within seconds, no restart.",
                          no_args_is_help=True)
app.add_typer(runtime_app, name="runtime")


def _control(config: Path | None, ledger_url: str | None):
    from gateway.control.store import ControlStore
    from gateway.ledger.schema import make_engine

    return ControlStore(make_engine(ledger_url or load_config(config).ledger.url))


def _control_call(change, *args) -> None:
    from gateway.control.store import ControlError

    try:
        version = change(*args)
    except ControlError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"control version {version}: replicas apply it on their next poll")


@runtime_app.command("register")
def runtime_register(
    tier_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML/JSON: one model_list entry"),
    config: Path | None = _CONFIG_OPT,
    ledger_url: str | None = _LEDGER_OPT,
) -> None:
    """Register (or replace) a tier at runtime."""
    import yaml
    from pydantic import ValidationError

    from gateway.config import TierConfig

    try:
        tier = TierConfig.model_validate(yaml.safe_load(tier_file.read_text()))
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="TIER_FILE") from None
    _control_call(_control(config, ledger_url).register_tier, tier)


@runtime_app.command("canary")
def runtime_canary(
    workload: str, tier: str,
    share: float = typer.Option(..., min=0.0, max=1.0, help="share of the workload's in-scope auto traffic"),
    competence: str | None = typer.Option(None, help="the candidate's competence index (.skops)"),
    cascade: str | None = typer.Option(None, help="the candidate's cascade confidence model (.skops, `distill cascade`)"),
    config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT,
) -> None:
    """Give a registered tier a canary share of a workload (behind its cascade with --cascade)."""
    _control_call(_control(config, ledger_url).set_canary, workload, tier, share, competence, cascade)


@runtime_app.command("router")
def runtime_router(
    artifact: str | None = typer.Option(None, help="router artifact (.skops); default: the config's"),
    threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="routing threshold; default: the config's"),
    competence: str | None = typer.Option(None, help="competence index (.skops) in front of the router"),
    config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT,
) -> None:
    """Replace the default chain's router, threshold or competence index on every replica."""
    _control_call(_control(config, ledger_url).set_router, artifact, threshold, competence)


@runtime_app.command("promote")
def runtime_promote(workload: str, config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """Make the workload's canary its tier."""
    _control_call(_control(config, ledger_url).promote, workload)


@runtime_app.command("rollback")
def runtime_rollback(workload: str, config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """Drop the workload's canary, or restore its previous tier."""
    _control_call(_control(config, ledger_url).rollback, workload)


@runtime_app.command("show")
def runtime_show(config: Path | None = _CONFIG_OPT, ledger_url: str | None = _LEDGER_OPT) -> None:
    """The stored control state (JSON)."""
    import json

    snapshot = _control(config, ledger_url).snapshot()
    typer.echo(json.dumps({"version": snapshot.version,
                           "tiers": {n: t.model_dump(mode="json", exclude_none=True) for n, t in snapshot.tiers.items()},
                           "workloads": {w: r.public() for w, r in snapshot.routes.items()}}, indent=2))
