"""The cost ledger's one table: a row per request, whatever its outcome.

Each row holds what happened (tier, tokens, latency, status) and what it cost next to what
the same tokens would have cost on the teacher, so savings are a SUM away.
"""

from __future__ import annotations

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
)
from sqlalchemy.engine import Engine

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


def make_engine(url: str) -> Engine:
    """An engine with the table created; SQLite in WAL mode so readers never block the writer."""
    url = normalise_url(url)
    if url.startswith("sqlite:///"):
        from pathlib import Path

        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=4)
    metadata.create_all(engine)
    return engine
