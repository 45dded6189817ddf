"""Writes ledger rows in group commits, without losing any.

A request hands its row to ``record`` (a list append, no I/O) and gets a future that resolves
once the row is committed. A background task writes everything pending in one transaction on
a worker thread, so the event loop never waits on the database; rows that arrive while a
write is in flight form the next batch (group commit), so many concurrent requests share one
commit and throughput holds. With ``durability: commit`` the request path awaits that future
before the response ends, so a response the client saw complete always has its row, even if
the gateway is killed with SIGKILL right after. With ``async`` it does not wait.

A failed write keeps its rows and retries with back-off; ``stop`` drains everything before the
process exits; ``flush`` lets a reader (the cost summary) see every row recorded before it
asked. Inserts skip a request id already present, so a retry after an ambiguous commit cannot
double-count.
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
    def __init__(self, engine: Engine, max_batch: int = 2000) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._db_lock = threading.Lock()
        self._insert_stmt = self._statement()
        self.write_errors = 0
        self.committed = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def record(self, row: dict) -> asyncio.Future:
        """Queue one row; never blocks, never raises. The future resolves when it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        self._wake.set()
        return done

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self) -> None:
        """Return once every row recorded before this call is committed."""
        waiting = [done for _, done in self._pending]
        if waiting:
            self._wake.set()
            await asyncio.gather(*(asyncio.shield(d) for d in waiting))

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
            if not await self._write_batch():
                await asyncio.sleep(0.2 * (attempt + 1))
        if self._pending:
            log.error("ledger: %d rows could not be written at shutdown", len(self._pending))
        await asyncio.to_thread(self.engine.dispose)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if not await self._write_batch():
                    await asyncio.sleep(min(5.0, 0.05 * 2 ** min(self.write_errors, 7)))

    async def _write_batch(self) -> bool:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        try:
            await asyncio.to_thread(self._insert, [row for row, _ in batch])
        except Exception:
            self.write_errors += 1
            log.exception("ledger: writing %d rows failed; they will be retried", len(batch))
            self._pending[:0] = batch
            return False
        self.committed += len(batch)
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        return True

    def _statement(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        if dialect == "sqlite":
            return sqlite.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        return requests_table.insert()

    def _insert(self, rows: list[dict]) -> None:
        with self._db_lock, self.engine.begin() as conn:
            conn.execute(self._insert_stmt, rows)
