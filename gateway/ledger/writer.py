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
from sqlalchemy.exc import DataError, IntegrityError, StatementError

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
        self.inline_ok = engine.dialect.name == "sqlite"
        self._writing = False
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

    def commit_inline(self) -> bool:
        """On an idle embedded SQLite ledger, commit what is pending right here, on the loop.

        A local WAL commit of a row takes ~0.1 ms, less than handing it to a worker thread and
        waking back up. Callers use it only when no other request is in flight: under load,
        one group commit for many rows beats a commit per row on the event loop.
        Returns True if it committed.
        """
        if not self.inline_ok or self._writing or not self._pending or len(self._pending) > 8:
            return False
        batch, self._pending = self._pending, []
        try:
            self._insert([row for row, _ in batch])
        except Exception:
            self._pending[:0] = batch
            return False
        self._committed(batch)
        return True

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
        self._writing = True
        try:
            await asyncio.to_thread(self._insert, [row for row, _ in batch])
        except Exception:
            self.write_errors += 1
            log.exception("ledger: writing %d rows failed; they will be retried", len(batch))
            self._pending[:0] = batch
            return False
        finally:
            self._writing = False
        self._committed(batch)
        return True

    def _committed(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        self.committed += len(batch)
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    def _statement(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        if dialect == "sqlite":
            return sqlite.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        return requests_table.insert()

    def _insert(self, rows: list[dict]) -> None:
        try:
            with self._db_lock, self.engine.begin() as conn:
                conn.execute(self._insert_stmt, rows)
        except (DataError, IntegrityError, StatementError) as exc:
            if isinstance(getattr(exc, "orig", None), ConnectionError):
                raise
            # One row the database refuses must not hold the others hostage: write them one by
            # one, each refused row once more with its free-text fields made safe.
            log.error("ledger: batch of %d refused (%s); writing row by row", len(rows), type(exc).__name__)
            for row in rows:
                self._insert_one(row)

    def _insert_one(self, row: dict) -> None:
        for candidate in (row, _sanitised(row)):
            try:
                with self._db_lock, self.engine.begin() as conn:
                    conn.execute(self._insert_stmt, [candidate])
                return
            except (DataError, IntegrityError, StatementError) as exc:
                error = exc
        log.error("ledger: row %s refused by the database even sanitised: %s", row.get("request_id"), error)


_FREE_TEXT = ("requested_model", "user", "error", "prompt", "completion")


def _sanitised(row: dict) -> dict:
    """The row with client-controlled text made valid UTF-8 and cut to its column size."""
    out = dict(row)
    for name in _FREE_TEXT:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = value.encode("utf-8", "replace").decode("utf-8")[: 100_000 if name in ("prompt", "completion", "error") else 256]
    return out
