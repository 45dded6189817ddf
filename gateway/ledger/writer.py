"""Writes ledger rows in group commits, without losing any.

A request hands its row to ``record`` (a list append, no I/O) and gets a future that resolves
once the row is committed (or, if the database refuses its content, quarantined). A
background task writes everything pending in one transaction on a worker thread, so the
event loop never waits on the database; rows that arrive while a write is in flight form the
next batch (group commit), so many concurrent requests share one commit and throughput holds.
With ``durability: commit`` the request path awaits that future before the response ends, so
a response the client saw complete always has its row, even if the gateway is killed with
SIGKILL right after. With ``async`` it does not wait.

Failures are sorted by what they mean (``db_errors.is_transient``), not by exception class:

* The database is unreachable or busy: the batch stays queued, in order, and is retried with
  back-off until it goes in. The backlog is bounded by ``max_backlog``: once it is reached,
  ``full`` tells the request path to refuse new requests (503) rather than serve answers it
  could not book. A warning is logged at most every ``BACKLOG_LOG_EVERY_S`` while it lasts.
* The database refuses a row's content: the batch is written row by row, and each refused
  row is quarantined (``dead_letters``), so it neither blocks the rows behind it nor vanishes.

Every row is made storable first (``rows.storable``: NUL bytes, lone surrogates, column
sizes), so a client cannot get an answer whose row the database refuses. ``stop`` drains what
it can and spools the rest to a file that the next start replays; ``flush`` lets a reader
(the cost summary) see every row recorded before it asked. Inserts skip a request id already
present, so a retry after an ambiguous commit (or a replay) cannot double-count.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from gateway.ledger.db_errors import describe, is_transient
from gateway.ledger.dead_letters import DeadLetters
from gateway.ledger.driver_insert import DriverInsert
from gateway.ledger.rows import storable, text_limits
from gateway.ledger.schema import requests_table

log = logging.getLogger("gateway.ledger")

BACKLOG_LOG_EVERY_S = 10.0
MAX_RETRY_DELAY_S = 2.0  # after an outage the backlog is written at most this long after the database is back
STOP_DRAIN_S = 5.0  # how long shutdown keeps retrying before it spools what is left to a file

_Pending = tuple[dict, asyncio.Future]


class LedgerWriter:
    def __init__(self, engine: Engine, max_batch: int = 2000, *, max_backlog: int = 50_000,
                 state_dir: Path = Path(".tierwise")) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self.dead_letters = DeadLetters(engine, state_dir)
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._db_lock = threading.Lock()
        self._insert_stmt = self._statement()
        self._driver_insert = (DriverInsert(engine, requests_table, self._insert_stmt)
                               if DriverInsert.supported(engine) else None)
        self._text_limits = text_limits(requests_table)
        self.inline_ok = engine.dialect.name == "sqlite"
        self._writing = False
        self._in_flight: list[_Pending] = []  # the batch being written: out of _pending, not settled
        self.write_errors = 0  # failed write attempts since start (each is retried)
        self.committed = 0
        self._failing_since: float | None = None  # monotonic time of the first failure of an outage
        self._consecutive_failures = 0
        self._last_backlog_log = 0.0

    @property
    def backlog(self) -> int:
        """Rows recorded and not yet settled, the batch being written included."""
        return len(self._pending) + len(self._in_flight)

    @property
    def full(self) -> bool:
        """True while the backlog is at its cap: new requests should be refused, not served unbooked."""
        return self.backlog >= self.max_backlog

    @property
    def failing(self) -> bool:
        """True while the last write attempt failed for want of a database."""
        return self._failing_since is not None

    def record(self, row: dict) -> asyncio.Future:
        """Queue one row; never blocks, never raises. The future resolves when it is committed.

        Rows of requests already admitted are always queued, even past ``max_backlog``: the cap
        stops admitting requests, it never drops a row.
        """
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
        if not self.inline_ok or self._writing or self.failing or not self._pending or len(self._pending) > 8:
            return False
        batch, self._pending = self._pending, []
        return self._settle(batch, *self._insert([row for row, _ in batch]))

    async def start(self) -> None:
        """Queue rows an earlier run spooled at shutdown, then start writing in the background."""
        spooled = await asyncio.to_thread(self.dead_letters.take_spooled)
        if spooled:
            log.warning("ledger: replaying %d rows saved by an earlier shutdown", len(spooled))
            futures = [self.record(row) for row in spooled]
            replay = asyncio.gather(*futures)
            replay.add_done_callback(lambda _: self.dead_letters.replayed())
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self) -> None:
        """Return once every row recorded before this call is settled (committed or quarantined)."""
        waiting = [done for _, done in self._in_flight + self._pending]
        if waiting:
            self._wake.set()
            await asyncio.gather(*(asyncio.shield(d) for d in waiting))

    async def stop(self) -> None:
        """Write everything still pending (spooling to a file what the database won't take in
        ``STOP_DRAIN_S``), then stop the background task."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        deadline = time.monotonic() + STOP_DRAIN_S
        while self._pending and time.monotonic() < deadline:
            if not await self._write_batch():
                await asyncio.sleep(min(self._retry_delay(), max(0.0, deadline - time.monotonic())))
        if self._pending:
            rows = [row for row, _ in self._pending]
            self._pending = []
            path = await asyncio.to_thread(self.dead_letters.spool, rows)
            log.error("ledger: database unreachable at shutdown; %d rows saved to %s (written at next start)",
                      len(rows), path)
        await asyncio.to_thread(self.engine.dispose)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if not await self._write_batch():
                    await asyncio.sleep(self._retry_delay())

    def _retry_delay(self) -> float:
        return min(MAX_RETRY_DELAY_S, 0.05 * 2 ** min(self._consecutive_failures, 8))

    async def _write_batch(self) -> bool:
        """Write the oldest rows; False if the database was unavailable (they stay queued)."""
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        self._writing, self._in_flight = True, batch
        work = asyncio.ensure_future(asyncio.to_thread(self._insert, [row for row, _ in batch]))
        try:
            outcome = await asyncio.shield(work)
        except asyncio.CancelledError:
            # Cancelled by stop(): the thread still runs; settle its batch before leaving.
            self._settle(batch, *await work)
            raise
        finally:
            self._writing, self._in_flight = False, []
        return self._settle(batch, *outcome)

    def _settle(self, batch: list[_Pending], settled: int, error: BaseException | None) -> bool:
        """Resolve the first ``settled`` rows, queue the rest again (in front, in order)."""
        for _, done in batch[:settled]:
            if not done.done():
                done.set_result(None)
        self.committed += settled
        if settled < len(batch):
            self._pending[:0] = batch[settled:]
        if error is None:
            self._recovered()
            return True
        self._failed(error)
        return False

    def _failed(self, error: BaseException) -> None:
        self.write_errors += 1
        self._consecutive_failures += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_backlog_log >= BACKLOG_LOG_EVERY_S:
            self._last_backlog_log = now
            log.warning("ledger: database unavailable for %.1f s (%s); %d rows queued (cap %d), retrying",
                        now - self._failing_since, describe(error), len(self._pending), self.max_backlog)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning("ledger: database reachable again after %.1f s; %d rows still queued",
                        time.monotonic() - self._failing_since, len(self._pending))
        self._failing_since = None
        self._consecutive_failures = 0
        self._last_backlog_log = 0.0

    def _statement(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        if dialect == "sqlite":
            return sqlite.insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"])
        return requests_table.insert()

    def _insert(self, rows: list[dict]) -> tuple[int, BaseException | None]:
        """Insert ``rows`` (on a worker thread); never raises.

        Returns how many rows, from the front, are settled (committed or quarantined) and the
        error that stopped the rest: a database that is away, so they must be retried.
        """
        clean = [storable(row, self._text_limits) for row in rows]
        try:
            self._execute(clean)
            return len(rows), None
        except Exception as exc:
            if is_transient(exc):
                return 0, exc
            log.error("ledger: batch of %d refused (%s); writing row by row", len(rows), describe(exc))
        # One row the database refuses must not hold the others hostage.
        for index, row in enumerate(clean):
            try:
                self._execute([row])
            except Exception as exc:
                if is_transient(exc):
                    return index, exc
                self.dead_letters.quarantine(rows[index], describe(exc))
        return len(rows), None

    def _execute(self, rows: list[dict]) -> None:
        with self._db_lock, self.engine.begin() as conn:
            if self._driver_insert is not None:
                self._driver_insert.execute(conn, rows)
            else:
                conn.execute(self._insert_stmt, rows)
