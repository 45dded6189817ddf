"""A workload's student behind a cascade (issue #13): the confidence model of the promoted tier,
of the canary and of the previously promoted tier, each fitted for its own student by the
flywheel (``distill cascade``), so a promotion or a rollback moves a student and its cascade together.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("cascade_artifact", "canary_cascade_artifact", "previous_cascade_artifact")


def upgrade() -> None:
    with op.batch_alter_table("workload_routes") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("workload_routes") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
