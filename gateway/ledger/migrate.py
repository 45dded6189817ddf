"""Bringing a ledger database to the current schema with Alembic, in place, on start-up.

Every gateway start (and every command that opens the ledger for writing) calls
``upgrade_to_head``: an empty database gets every table; a ledger made before migrations
existed (tables, no ``alembic_version``) gets the idempotent baseline (missing tables and
columns added, rows kept) and then the later revisions; a migrated ledger gets what it lacks.
Replicas may start together: on PostgreSQL the upgrade holds a transaction-level advisory
lock, on SQLite an exclusive file lock next to the database, so one of them migrates and the
others find the work done. The scripts live in ``migrations/`` inside the package; there is no
``alembic.ini`` to ship or find.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

log = logging.getLogger("gateway.ledger")

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x7469657277  # "tierw": the advisory lock every replica's upgrade takes


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations under {MIGRATIONS}"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> None:
    """Migrate ``engine``'s database to the newest revision (a no-op when it is there)."""
    head = head_revision()
    with _exclusive(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        current = current_revision(conn)
        if current == head and inspect(conn).has_table("ledger_requests"):
            return
        if current is not None and not inspect(conn).has_table("ledger_requests"):
            # The ledger's tables were dropped by hand but the version row stayed: start over.
            log.warning("ledger: alembic_version says %s but the tables are gone; recreating them", current)
            conn.execute(text("DELETE FROM alembic_version"))
            current = None
        log.info("ledger: migrating schema %s -> %s", current or "(none)", head)
        command.upgrade(alembic_config(conn), "head")


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """On SQLite, one process at a time migrates (PostgreSQL uses its advisory lock)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
