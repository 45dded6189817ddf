"""Captured pairs in the ledger database: redacted, size-checked, written off the event loop.

``submit`` is what the request path calls (through the booking's sink): it only appends to a
bounded queue. A background task hands each batch to a worker thread, which redacts every
string of the request and the answer (``tierwise_common.redaction``), drops records over
``max_record_bytes`` and inserts the rest in one transaction; a request id already captured
is skipped. If the database is away the batch is dropped and counted (captured data is a
sample, not a record of account: the ledger row is what must not be lost). ``purge_expired``
deletes what is past ``retention_days``; the gateway runs it hourly and
``python -m gateway capture purge`` on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import CaptureConfig
from gateway.ledger.schema import captures_table
from tierwise_common.redaction import redact_json

log = logging.getLogger("gateway.capture")

MAX_QUEUE = 10_000  # pending records beyond this are dropped (and counted): capture must never hold memory hostage
FLUSH_EVERY_S = 0.5
PURGE_EVERY_S = 3600.0


@dataclass(slots=True)
class CapturedPair:
    """One teacher answer to keep, before redaction."""

    request_id: str
    ts: datetime
    workload: str
    api_key_id: str | None
    endpoint: str
    tier: str
    request: dict
    response: dict
    logprobs: list | None
    prompt_tokens: int
    completion_tokens: int


class CaptureStore:
    def __init__(self, engine: Engine, config: CaptureConfig) -> None:
        self.engine = engine
        self.config = config
        self.stored = 0
        self.dropped = 0  # queue full, too big, or the database refused the batch
        self._queue: list[CapturedPair] = []
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._last_purge = 0.0

    # -- the request path ----------------------------------------------------------------
    def submit(self, pair: CapturedPair) -> None:
        """Queue ``pair`` for writing (no I/O, no redaction here: both happen on a worker thread)."""
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(pair)
        self._wake.set()

    # -- background writer ---------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now (tests and shutdown)."""
        while self._queue:
            batch, self._queue = self._queue, []
            await asyncio.to_thread(self.write, batch)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_EVERY_S)  # let a burst form one batch
            try:
                await self.flush()
                if loop.time() - self._last_purge > PURGE_EVERY_S:
                    self._last_purge = loop.time()
                    await asyncio.to_thread(self.purge_expired)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive a bad batch
                log.error("capture: writing a batch failed: %s", exc)

    # -- synchronous (worker thread, CLI) --------------------------------------------------
    def row(self, pair: CapturedPair) -> dict | None:
        """The redacted row for ``pair``, or None when it is over the size cap."""
        request, n_request = redact_json(pair.request)
        response, n_response = redact_json(pair.response)
        request_json = json.dumps(request, ensure_ascii=False)
        response_json = json.dumps(response, ensure_ascii=False)
        # Logprobs carry the answer's tokens: redacted token by token would not catch a number
        # split across tokens, so they are kept only when the answer needed no redaction.
        logprobs_json = json.dumps(pair.logprobs, ensure_ascii=False) if pair.logprobs and not n_response else None
        size = len(request_json.encode()) + len(response_json.encode()) + len((logprobs_json or "").encode())
        if size > self.config.max_record_bytes:
            return None
        return {"ts": pair.ts, "request_id": pair.request_id, "workload": pair.workload,
                "api_key_id": pair.api_key_id, "endpoint": pair.endpoint, "tier": pair.tier,
                "request_json": request_json, "response_json": response_json, "logprobs_json": logprobs_json,
                "prompt_tokens": pair.prompt_tokens, "completion_tokens": pair.completion_tokens,
                "size_bytes": size, "redactions": n_request + n_response}

    def write(self, batch: list[CapturedPair]) -> int:
        rows = [r for r in (self.row(p) for p in batch) if r is not None]
        self.dropped += len(batch) - len(rows)
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                ids = [r["request_id"] for r in rows]
                present = set(conn.execute(sa.select(captures_table.c.request_id)
                                           .where(captures_table.c.request_id.in_(ids))).scalars())
                fresh = []
                for r in rows:  # skip ids already stored, and repeats within the batch
                    if r["request_id"] not in present:
                        present.add(r["request_id"])
                        fresh.append(r)
                if fresh:
                    conn.execute(captures_table.insert(), fresh)
        except Exception as exc:  # noqa: BLE001 - captured data is a sample: drop and count
            self.dropped += len(rows)
            log.warning("capture: %d records dropped, the database refused them: %s", len(rows), exc)
            return 0
        self.stored += len(fresh)
        return len(fresh)

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete records older than ``retention_days``; returns how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.config.retention_days)
        with self.engine.begin() as conn:
            deleted = conn.execute(captures_table.delete().where(captures_table.c.ts < cutoff)).rowcount
        if deleted:
            log.info("capture: purged %d records older than %s", deleted, cutoff.isoformat())
        return deleted or 0

    def counts(self) -> dict[str, int]:
        """Records kept per workload."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(captures_table.c.workload, sa.func.count())
                                .group_by(captures_table.c.workload)).all()
        return {workload: count for workload, count in rows}

    def iter_records(self, workload: str, since: datetime | None = None) -> Iterator[dict]:
        """Captured records of ``workload`` in capture order, as dicts of the table's columns."""
        stmt = sa.select(captures_table).where(captures_table.c.workload == workload).order_by(captures_table.c.id)
        if since is not None:
            stmt = stmt.where(captures_table.c.ts >= since)
        with self.engine.connect() as conn:
            for row in conn.execute(stmt.execution_options(yield_per=500)).mappings():
                yield dict(row)
