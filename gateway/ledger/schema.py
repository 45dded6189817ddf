"""The cost ledger's tables: a row per request, whatever its outcome (plus keys, shadow pairs,
the dead letters the database refused, captured pairs and drift state). Their DDL is owned
by the Alembic revisions in ``migrations/``; these ``Table`` objects are what queries use, and
a test checks the two agree.

Each row holds what happened (tier, tokens, latency, status) and what it cost next to what
the same tokens would have cost on the teacher, so savings are a SUM away.

Engines are made with ``hide_parameters``: a database error's text would otherwise carry the
bound values (user names, prompts) into the logs.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine

from gateway.ledger.migrate import upgrade_to_head

metadata = MetaData()

requests_table = Table(
    "ledger_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("api_key_id", String(64), index=True),
    Column("endpoint", String(32), nullable=False),
    Column("requested_model", String(256), nullable=False),
    Column("tier", String(128), index=True),
    Column("route_policy", String(32)),
    Column("route_score", Float),
    Column("route_threshold", Float),
    Column("fallback_from", String(128)),
    Column("attempts", Integer, nullable=False, default=1),
    Column("stream", Boolean, nullable=False, default=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    # 'upstream': the tier reported the tokens; 'counted': a stream cut before the tier's usage,
    # booked from the relayed text (an estimate); NULL: no tokens reported.
    Column("usage_source", String(16)),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("status", String(32), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("error", Text),
    Column("cost", Float, nullable=False, default=0.0),
    Column("teacher_cost", Float, nullable=False, default=0.0),
    Column("user", String(256)),
    Column("prompt", Text),
    Column("completion", Text),
    # The cascade (gateway/routing/cascade.py): the student's confidence, whether the teacher
    # answered instead, and the rejected student attempt (real compute, included in ``cost``).
    Column("cascade_confidence", Float),
    Column("escalated", Boolean),
    Column("extra_prompt_tokens", Integer),
    Column("extra_completion_tokens", Integer),
    Column("extra_cost", Float),
    # The workload the request named (``x-tierwise-workload``; issue #13), for capture and reports.
    Column("workload", String(128), index=True),
    # How the row was priced (issue #14): 'list' or 'map' per-token prices, or a per_hour machine
    # cost at the tier's 'measured' (or, before any measurement, 'assumed') throughput.
    Column("price_source", String(16)),
    Column("price_per_hour", Float),
    Column("price_tokens_per_s", Float),
)


# Rows the database refused for their content, kept as JSON text with the error (see
# gateway/ledger/dead_letters.py): quarantined, never dropped.
dead_letters_table = Table(
    "ledger_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64)),
    Column("error", Text, nullable=False),
    Column("row_json", Text, nullable=False),
)


api_keys_table = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("budget", Float),
    Column("budget_period", String(8)),
    Column("capture", Boolean, nullable=False, default=False),  # opted in to content capture
)


shadow_pairs_table = Table(
    "shadow_pairs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(64), nullable=False),
    Column("tier", String(128), nullable=False),
    Column("reference_tier", String(128), nullable=False),
    Column("agreement", Float),
    Column("metric", String(16), nullable=False),
    Column("prompt", Text),
    Column("answer", Text),
    Column("reference_answer", Text),
    Column("reference_cost", Float, nullable=False, default=0.0),
    Column("error", Text),
)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver the project installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class LedgerNotFound(LookupError):
    """A read-only command was pointed at a ledger that does not exist (e.g. a mistyped path)."""


def _sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL, or None for another database or an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return path if path and path != ":memory:" else None


def open_existing(url: str) -> Engine:
    """An engine on a ledger that must already exist, for commands that only read it.

    ``make_engine`` creates what is missing, which is right for the gateway but turned a
    mistyped SQLite path into a fresh empty ledger and a report of $0 (issue #15).
    """
    url = normalise_url(url)
    path = _sqlite_path(url)
    if path is not None and not Path(path).is_file():
        raise LedgerNotFound(f"no ledger database at {path} (check the path or --ledger-url)")
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            present = inspect(conn).has_table(requests_table.name)
    except Exception:
        engine.dispose()
        raise
    if not present:
        engine.dispose()
        raise LedgerNotFound(f"{engine.url.render_as_string(hide_password=True)} holds no ledger "
                             f"(table {requests_table.name} is missing)")
    return engine


def make_engine(url: str) -> Engine:
    """An engine on a database migrated to the current schema (``migrate.py``); SQLite in WAL
    mode so readers never block the writer."""
    url = normalise_url(url)
    path = _sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = _engine(url)
    upgrade_to_head(engine)
    return engine


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    else:
        # connect_timeout: a database host that drops packets must fail a write attempt (which
        # is retried) instead of holding the ledger writer's thread for minutes.
        connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
        engine = create_engine(url, pool_pre_ping=True, pool_size=4, hide_parameters=True,
                               connect_args=connect_args)
    return engine


# Teacher-served request/response pairs kept for distillation (gateway/capture/): redacted,
# sampled, capped per workload and purged after the retention period.
captures_table = Table(
    "captures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("workload", String(128), nullable=False, index=True),
    Column("api_key_id", String(64)),
    Column("endpoint", String(32), nullable=False),
    Column("tier", String(128), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("response_json", Text, nullable=False),
    Column("logprobs_json", Text),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("size_bytes", Integer, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
)


# The drift monitor's state per monitored tier, shared by replicas and kept across restarts.
drift_state_table = Table(
    "drift_state",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("state_json", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Runtime control (gateway/control/): tiers registered at runtime, per-workload routes and
# canaries, and the version replicas poll to pick changes up without a restart.
runtime_tiers_table = Table(
    "runtime_tiers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("config_json", Text, nullable=False),
    Column("retired", Boolean, nullable=False, default=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

workload_routes_table = Table(
    "workload_routes",
    metadata,
    Column("workload", String(128), primary_key=True),
    Column("tier", String(128)),
    Column("competence_artifact", Text),
    Column("canary_tier", String(128)),
    Column("canary_share", Float, nullable=False, default=0.0),
    Column("previous_tier", String(128)),
    # the cascade confidence model (.skops) of the promoted tier, of the canary, and of the
    # previously promoted tier (restored with it on rollback): each is fitted for one student
    Column("cascade_artifact", Text),
    Column("canary_cascade_artifact", Text),
    Column("previous_cascade_artifact", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

runtime_router_table = Table(
    "runtime_router",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("artifact", Text),
    Column("threshold", Float),
    Column("competence_artifact", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

runtime_version_table = Table(
    "runtime_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
