"""Compute-priced tiers (issue #14 item 7): each ledger row records the basis of its price,
``price_source`` ('list', 'map', 'measured', 'assumed') and, for a per_hour price, the machine
cost and the throughput that turned it into a per-token price.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch:
        batch.add_column(sa.Column("price_source", sa.String(16)))
        batch.add_column(sa.Column("price_per_hour", sa.Float))
        batch.add_column(sa.Column("price_tokens_per_s", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch:
        batch.drop_column("price_tokens_per_s")
        batch.drop_column("price_per_hour")
        batch.drop_column("price_source")
