"""The flywheel's tables (issue #13): captured request/response pairs, the request's workload
on its ledger row, the per-key capture opt-in, and drift state shared by replicas.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "captures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("workload", sa.String(128), nullable=False, index=True),
        sa.Column("api_key_id", sa.String(64)),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(128), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("response_json", sa.Text, nullable=False),
        sa.Column("logprobs_json", sa.Text),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("redactions", sa.Integer, nullable=False, server_default="0"),
    )
    with op.batch_alter_table("ledger_requests") as batch:
        batch.add_column(sa.Column("workload", sa.String(128)))
        batch.create_index("ix_ledger_requests_workload", ["workload"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("capture", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "drift_state",
        sa.Column("name", sa.String(128), primary_key=True),  # the monitored tier (or tier@workload)
        sa.Column("state_json", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_state")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("capture")
    with op.batch_alter_table("ledger_requests") as batch:
        batch.drop_index("ix_ledger_requests_workload")
        batch.drop_column("workload")
    op.drop_table("captures")
