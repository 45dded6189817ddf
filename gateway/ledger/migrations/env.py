"""Alembic environment for the ledger: always run programmatically (``gateway.ledger.migrate``)
on a connection the gateway hands over, never from an ``alembic.ini``."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table.
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
