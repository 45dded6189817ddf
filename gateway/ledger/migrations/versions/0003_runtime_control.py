"""Runtime control (issue #13 item 5): tiers registered while the gateway runs, per-workload
routes (the student serving a workload, its competence index, a canary and its share), the
default chain's router / threshold / competence index, and a
version every replica polls so a change reaches all of them within seconds, without restart.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_tiers",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("config_json", sa.Text, nullable=False),  # a model_list entry (TierConfig)
        sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "workload_routes",
        sa.Column("workload", sa.String(128), primary_key=True),
        sa.Column("tier", sa.String(128)),  # the promoted student of this workload (None: the default routing)
        sa.Column("competence_artifact", sa.Text),  # its competence index: out-of-scope requests skip it
        sa.Column("canary_tier", sa.String(128)),
        sa.Column("canary_share", sa.Float, nullable=False, server_default="0"),
        sa.Column("previous_tier", sa.String(128)),  # what rollback restores
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(  # the default chain's router, threshold and competence index, when changed at runtime
        "runtime_router",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("artifact", sa.Text),
        sa.Column("threshold", sa.Float),
        sa.Column("competence_artifact", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "runtime_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runtime_version")
    op.drop_table("runtime_router")
    op.drop_table("workload_routes")
    op.drop_table("runtime_tiers")
