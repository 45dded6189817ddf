"""The ledger's schema through Alembic (issue #13): an empty database, a ledger made before
migrations (upgraded in place, rows kept), replicas starting together, and the Table objects
the queries use agreeing with what the migrations create. Real SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from gateway.ledger.migrate import current_revision, head_revision
from gateway.ledger.schema import make_engine, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names() if t != "alembic_version"}


def test_an_empty_database_gets_the_schema_the_queries_use(db_url):
    engine = make_engine(db_url)
    try:
        assert _columns(engine) == {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
    finally:
        engine.dispose()


# The ledger as gateway 0.1 created it (create_all, before usage_source and the cascade columns).
OLD_DDL = [
    """CREATE TABLE ledger_requests (id INTEGER PRIMARY KEY, ts TIMESTAMP NOT NULL, request_id VARCHAR(64) NOT NULL UNIQUE,
    api_key_id VARCHAR(64), endpoint VARCHAR(32) NOT NULL, requested_model VARCHAR(256) NOT NULL, tier VARCHAR(128),
    route_policy VARCHAR(32), route_score FLOAT, route_threshold FLOAT, fallback_from VARCHAR(128),
    attempts INTEGER NOT NULL, stream BOOLEAN NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    latency_ms FLOAT, ttft_ms FLOAT, status VARCHAR(32) NOT NULL, http_status INTEGER NOT NULL, error TEXT,
    cost FLOAT NOT NULL, teacher_cost FLOAT NOT NULL, "user" VARCHAR(256), prompt TEXT, completion TEXT)""",
    """CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128) NOT NULL, key_hash VARCHAR(64) NOT NULL UNIQUE,
    prefix VARCHAR(16) NOT NULL, admin BOOLEAN NOT NULL, created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP,
    rpm INTEGER, tpm INTEGER, budget FLOAT, budget_period VARCHAR(8))""",
]


def test_a_ledger_made_before_migrations_is_upgraded_in_place(db_url):
    old = sa.create_engine(db_url)
    with old.begin() as conn:
        for ddl in OLD_DDL:
            conn.execute(sa.text(ddl.replace("id INTEGER PRIMARY KEY", "id SERIAL PRIMARY KEY")
                                 if db_url.startswith("postgresql") else ddl))
        conn.execute(sa.text(
            "INSERT INTO ledger_requests (ts, request_id, endpoint, requested_model, attempts, stream, prompt_tokens, "
            "completion_tokens, status, http_status, cost, teacher_cost) VALUES "
            "(CURRENT_TIMESTAMP, 'old-1', 'chat', 'student', 1, false, 3, 4, 'ok', 200, 0.5, 1.0)"))
        conn.execute(sa.text("INSERT INTO api_keys (id, name, key_hash, prefix, admin, created_at) VALUES "
                             "('k1', 'ops', 'h1', 'tw-abc', true, CURRENT_TIMESTAMP)"))
    old.dispose()

    engine = make_engine(db_url)
    try:
        assert _columns(engine) == {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}
        with engine.begin() as conn:
            assert current_revision(conn) == head_revision()
            row = conn.execute(sa.text("SELECT request_id, cost, usage_source, workload FROM ledger_requests")).one()
            assert tuple(row) == ("old-1", 0.5, None, None)
            key = conn.execute(sa.text("SELECT id, admin, capture FROM api_keys")).one()
            assert key.id == "k1" and bool(key.admin) and not bool(key.capture)  # opt-in defaults to off
    finally:
        engine.dispose()
    make_engine(db_url).dispose()  # a second start finds nothing to do


def test_replicas_starting_together_migrate_once(db_url):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            make_engine(db_url).dispose()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_dropped_tables_with_a_stale_version_row_are_recreated(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    engine = make_engine(url)
    try:
        assert "captures" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
