"""The ledger writer (``gateway/ledger/writer.py``) on a real SQLite file: group commit, retry
while the database cannot take rows, dead letters, idempotent inserts, the backlog cap."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event

from gateway.ledger.schema import make_engine, metadata, requests_table
from gateway.ledger.writer import LedgerWriter
from support.ledger import ledger_rows, sample_row


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def count_commits(writer: LedgerWriter) -> list[int]:
    commits: list[int] = []
    event.listen(writer.engine, "commit", lambda _conn: commits.append(1))
    return commits


async def test_rows_recorded_together_share_one_commit_of_at_most_max_batch(url, tmp_path):
    writer = LedgerWriter(make_engine(url), max_batch=40, state_dir=tmp_path)
    commits = count_commits(writer)
    futures = [writer.record(sample_row(f"r{i}")) for i in range(100)]  # all pending before the writer runs
    await writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(*futures), 20)
    finally:
        await writer.stop()
    assert len(commits) == 3  # 40 + 40 + 20, not 100 commits
    assert [r["request_id"] for r in ledger_rows(url)] == [f"r{i}" for i in range(100)]  # in order
    assert writer.committed == 100


async def test_rows_stay_queued_while_the_table_is_missing_and_go_in_once_it_is_back(url, tmp_path):
    writer = LedgerWriter(make_engine(url), state_dir=tmp_path)
    await writer.start()
    requests_table.drop(writer.engine)  # the database's state, not the rows' content: transient
    try:
        futures = [writer.record(sample_row(f"r{i}")) for i in range(5)]
        for _ in range(200):
            if writer.failing and writer.write_errors >= 2:
                break
            await asyncio.sleep(0.02)
        assert writer.failing and writer.backlog == 5 and not any(f.done() for f in futures)
        metadata.create_all(writer.engine)
        await asyncio.wait_for(asyncio.gather(*futures), 20)
        assert not writer.failing
    finally:
        await writer.stop()
    assert sorted(r["request_id"] for r in ledger_rows(url)) == [f"r{i}" for i in range(5)]


async def test_a_refused_row_is_dead_lettered_and_its_neighbours_are_booked(url, tmp_path):
    writer = LedgerWriter(make_engine(url), state_dir=tmp_path)
    futures = [writer.record(sample_row("ok-1")), writer.record(sample_row("bad", status=None)),
               writer.record(sample_row("ok-2"))]
    await writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(*futures), 20)  # the refused row settles too: nothing hangs
    finally:
        await writer.stop()
    assert [r["request_id"] for r in ledger_rows(url)] == ["ok-1", "ok-2"]
    assert [r["request_id"] for r in ledger_rows(url, "ledger_dead_letters")] == ["bad"]
    assert writer.dead_letters.quarantined == 1


async def test_a_request_id_already_booked_is_not_booked_twice(url, tmp_path):
    writer = LedgerWriter(make_engine(url), state_dir=tmp_path)
    await writer.start()
    try:
        await writer.record(sample_row("same", cost=1.0))
        await writer.record(sample_row("same", cost=2.0))  # a retry after an ambiguous commit
    finally:
        await writer.stop()
    assert [(r["request_id"], r["cost"]) for r in ledger_rows(url)] == [("same", 1.0)]


async def test_the_backlog_cap_reports_full_but_never_drops_a_row(url, tmp_path):
    writer = LedgerWriter(make_engine(url), max_backlog=3, state_dir=tmp_path)
    futures = [writer.record(sample_row(f"r{i}")) for i in range(5)]
    assert writer.full and writer.backlog == 5  # past the cap: admitted requests still book
    await writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(*futures), 20)
        assert not writer.full and writer.backlog == 0
    finally:
        await writer.stop()
    assert len(ledger_rows(url)) == 5


async def test_flush_returns_once_everything_recorded_before_it_is_committed(url, tmp_path):
    writer = LedgerWriter(make_engine(url), state_dir=tmp_path)
    await writer.start()
    try:
        for i in range(10):
            writer.record(sample_row(f"r{i}"))
        await asyncio.wait_for(writer.flush(), 20)
        assert len(ledger_rows(url)) == 10
    finally:
        await writer.stop()


async def test_commit_inline_books_a_lone_row_on_an_idle_sqlite_ledger(url, tmp_path):
    writer = LedgerWriter(make_engine(url), state_dir=tmp_path)
    done = writer.record(sample_row("inline"))
    assert writer.commit_inline() and done.done()
    assert [r["request_id"] for r in ledger_rows(url)] == ["inline"]
    await writer.stop()


def test_the_driver_insert_stores_what_sqlalchemy_would(url, tmp_path):
    """SQLite rows go in through the compiled statement and the driver's executemany
    (``ledger/driver_insert.py``); read back, each equals the same row inserted by SQLAlchemy."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from gateway.ledger.driver_insert import DriverInsert

    engine = make_engine(url)
    writer = LedgerWriter(engine, state_dir=tmp_path)
    assert writer._driver_insert is not None
    stamp = datetime(2026, 11, 28, 17, 5, 4, 120, tzinfo=UTC)
    varied = {"ts": stamp, "stream": True, "escalated": False, "route_score": 0.25, "user": "Zoë ✓",
              "api_key_id": "key_1", "cascade_confidence": None, "price_per_hour": 0.2}
    lacking = {k: v for k, v in sample_row("x").items() if k not in ("attempts", "cost")}  # defaults apply
    with engine.begin() as conn:
        writer._driver_insert.execute(conn, [sample_row("driver-1", **varied), {**lacking, "request_id": "driver-2"}])
        conn.execute(requests_table.insert(), [sample_row("sa-1", **varied)])
        conn.execute(requests_table.insert(), [{**lacking, "request_id": "sa-2"}])
    with engine.connect() as conn:
        rows = {r.request_id: r._asdict() for r in conn.execute(sa.select(requests_table))}
    for ours, theirs in (("driver-1", "sa-1"), ("driver-2", "sa-2")):
        a, b = dict(rows[ours]), dict(rows[theirs])
        for row in (a, b):
            row.pop("id"), row.pop("request_id")
        assert a == b
    assert rows["driver-1"]["ts"].replace(tzinfo=UTC) == stamp and rows["driver-2"]["attempts"] == 1
    assert DriverInsert.supported(engine) and "ON CONFLICT" in writer._driver_insert.sql.upper()
