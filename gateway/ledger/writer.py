"""Writes ledger rows off the request path, in batches, without losing any.

Requests hand their row to ``record`` (a list append, no I/O) and return. A background task
wakes every ``flush_interval_s`` (or when a batch is full), and writes everything pending in
one transaction on a worker thread, so the event loop never waits on the database. A failed
write keeps its rows and tries again; ``stop`` drains everything before the process exits;
``flush`` lets a reader (the cost summary) see every row recorded before it asked. Inserts
ignore a request id already present, so a retry after an ambiguous commit cannot double-count.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from gateway.ledger.schema import requests_table

log = logging.getLogger("gateway.ledger")


class LedgerWriter:
    def __init__(self, engine: Engine, batch_size: int = 500, flush_interval_s: float = 0.05) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._written_seq = 0  # rows committed so far (monotonic)
        self._recorded_seq = 0  # rows handed to record() so far
        self._committed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._db_lock = threading.Lock()
        self.write_errors = 0

    @property
    def backlog(self) -> int:
        return self._recorded_seq - self._written_seq

    def record(self, row: dict) -> None:
        """Queue one row; never blocks, never raises."""
        self._pending.append(row)
        self._recorded_seq += 1
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self) -> None:
        """Return once every row recorded before this call is committed."""
        target = self._recorded_seq
        if self._written_seq >= target:
            return
        self._wake.set()
        async with self._committed:
            await self._committed.wait_for(lambda: self._written_seq >= target)

    async def stop(self) -> None:
        """Write everything still pending, then stop the background task."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for attempt in range(5):
            if not self._pending:
                break
            if not await self._write_pending():
                await asyncio.sleep(0.2 * (attempt + 1))
        if self._pending:
            log.error("ledger: %d rows could not be written at shutdown", len(self._pending))
        await asyncio.to_thread(self.engine.dispose)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._pending and not await self._write_pending():
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self.write_errors, 6)))

    async def _write_pending(self) -> bool:
        rows, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._insert, rows)
        except Exception:
            self.write_errors += 1
            log.exception("ledger: writing %d rows failed; they will be retried", len(rows))
            self._pending[:0] = rows
            return False
        self._written_seq += len(rows)
        async with self._committed:
            self._committed.notify_all()
        return True

    def _insert(self, rows: list[dict]) -> None:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            stmt = postgresql.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        elif dialect == "sqlite":
            stmt = sqlite.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        else:
            stmt = requests_table.insert()
        with self._db_lock, self.engine.begin() as conn:
            conn.execute(stmt, rows)
