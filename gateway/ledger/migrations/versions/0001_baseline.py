"""Baseline: the ledger as the gateway made it before migrations (0.1: requests, dead
letters, API keys, shadow pairs, and the columns added to requests since).

Idempotent on purpose: a ledger made by an older gateway (``create_all`` and ad-hoc ``ALTER``s,
no ``alembic_version``) is brought to exactly this state in place (missing tables created,
missing nullable columns added, rows kept), then later revisions apply to it like to any other.
The tables are a frozen copy, not ``gateway.ledger.schema``'s live ones, which keep changing.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_frozen = sa.MetaData()

sa.Table(
    "ledger_requests", _frozen,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("api_key_id", sa.String(64), index=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("requested_model", sa.String(256), nullable=False),
    sa.Column("tier", sa.String(128), index=True),
    sa.Column("route_policy", sa.String(32)),
    sa.Column("route_score", sa.Float),
    sa.Column("route_threshold", sa.Float),
    sa.Column("fallback_from", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("teacher_cost", sa.Float, nullable=False),
    sa.Column("user", sa.String(256)),
    sa.Column("prompt", sa.Text),
    sa.Column("completion", sa.Text),
    sa.Column("cascade_confidence", sa.Float),
    sa.Column("escalated", sa.Boolean),
    sa.Column("extra_prompt_tokens", sa.Integer),
    sa.Column("extra_completion_tokens", sa.Integer),
    sa.Column("extra_cost", sa.Float),
)
sa.Table(
    "ledger_dead_letters", _frozen,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("row_json", sa.Text, nullable=False),
)
sa.Table(
    "api_keys", _frozen,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("budget", sa.Float),
    sa.Column("budget_period", sa.String(8)),
)
sa.Table(
    "shadow_pairs", _frozen,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("tier", sa.String(128), nullable=False),
    sa.Column("reference_tier", sa.String(128), nullable=False),
    sa.Column("agreement", sa.Float),
    sa.Column("metric", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text),
    sa.Column("answer", sa.Text),
    sa.Column("reference_answer", sa.Text),
    sa.Column("reference_cost", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
)


def upgrade() -> None:
    bind = op.get_bind()
    _frozen.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in _frozen.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:  # added after the table's first release
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    _frozen.drop_all(bind, checkfirst=True)
