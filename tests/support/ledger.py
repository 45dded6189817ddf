"""Reading the ledger from tests: the one way every test looks at what the gateway booked.

Tests read the real database (SQLite file or PostgreSQL schema) with plain SQL rather than
through ``gateway.ledger.queries``, so a fault in the gateway's own queries cannot hide a
missing or wrong row. Rows come back as dicts keyed by column name, oldest first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from support.processes import wait_until


def ledger_url(ledger: str | Path) -> str:
    """A SQLAlchemy URL for ``ledger``: a URL as is, a path as its SQLite file."""
    return ledger if isinstance(ledger, str) and "://" in ledger else f"sqlite:///{ledger}"


def ledger_rows(ledger: str | Path, table: str = "ledger_requests", *, where: str = "",
                params: dict | None = None) -> list[dict]:
    """Every row of ``table`` (optionally filtered by a SQL ``where`` clause), in insertion order."""
    engine = sa.create_engine(ledger_url(ledger))
    try:
        with engine.connect() as conn:
            sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + " ORDER BY id"
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params or {})]
    finally:
        engine.dispose()


def ledger_row(ledger: str | Path, request_id: str, *, wait_s: float = 0.0) -> dict:
    """The row booked for ``request_id``; with ``wait_s``, waits that long for the writer to commit it
    (``durability: async`` books after the response). Fails if there is none."""
    def fetch() -> dict | None:
        rows = ledger_rows(ledger, where="request_id = :r", params={"r": request_id})
        return rows[0] if rows else None

    row = wait_until(fetch, wait_s, f"ledger row {request_id}") if wait_s else fetch()
    assert row is not None, f"no ledger row for request {request_id} in {ledger_url(ledger)}"
    return row


def sample_row(request_id: str, **overrides: object) -> dict:
    """A complete, valid ``ledger_requests`` row for writing straight to the ledger."""
    row = {"ts": datetime.now(UTC), "request_id": request_id, "api_key_id": None, "endpoint": "chat",
           "requested_model": "student", "tier": "student", "route_policy": "fixed", "route_score": None,
           "route_threshold": None, "fallback_from": None, "attempts": 1, "stream": False,
           "prompt_tokens": 3, "completion_tokens": 5, "latency_ms": 1.0, "ttft_ms": None, "status": "ok",
           "http_status": 200, "error": None, "cost": 0.001, "teacher_cost": 0.002, "user": None,
           "prompt": None, "completion": None}
    return {**row, **overrides}
