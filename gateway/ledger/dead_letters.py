"""Where ledger rows go when the ledger table cannot take them: never nowhere.

Two cases, two places:

* A row the database refuses for its content (a value it will never accept, even cleaned) is
  *quarantined*: kept in the ``ledger_dead_letters`` table as JSON text with the error, so an
  operator can see and repair it; if even that insert fails, appended to
  ``<state_dir>/ledger-dead-letters.jsonl``. Retrying it would block the rows behind it forever.
* Rows still queued when the gateway stops while the database is unreachable are *spooled* to
  ``<state_dir>/ledger-unwritten.jsonl`` and queued again by the next start (inserts skip a
  request id already present, so replaying a row twice books it once).

Files are appended and fsynced line by line: they are the last resort, so they must survive a
crash right after the write.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from gateway.ledger.db_errors import describe
from gateway.ledger.rows import from_json, to_json
from gateway.ledger.schema import dead_letters_table

log = logging.getLogger("gateway.ledger")

DEAD_LETTER_FILE = "ledger-dead-letters.jsonl"
SPOOL_FILE = "ledger-unwritten.jsonl"
_REPLAYING_SUFFIX = ".replaying"


class DeadLetters:
    """Quarantine for refused rows and the spool for rows unwritten at shutdown."""

    def __init__(self, engine: Engine, state_dir: Path) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self.quarantined = 0  # rows kept out of the ledger table since start (table or file)
        self._unreadable_spool_lines = 0
        self._file_lock = threading.Lock()

    # ---- refused rows ----------------------------------------------------------------------
    def quarantine(self, row: dict, error: str) -> None:
        """Keep ``row`` (refused by the database with ``error``) in the table, else in the file."""
        self.quarantined += 1
        record = {"ts": datetime.now(UTC), "request_id": str(row.get("request_id", ""))[:64],
                  "error": error[:2000], "row_json": to_json(row)}
        log.error("ledger: row %s refused by the database (%s); kept in ledger_dead_letters",
                  record["request_id"], error)
        try:
            with self.engine.begin() as conn:
                conn.execute(dead_letters_table.insert(), [record])
        except Exception as exc:  # the table is the first choice, the file the last: never raise here
            path = self._append(DEAD_LETTER_FILE, [to_json({**record, "ts": record["ts"].isoformat()})])
            log.error("ledger: dead-letter table refused row %s too (%s); kept in %s",
                      record["request_id"], describe(exc), path)

    # ---- rows unwritten at shutdown --------------------------------------------------------
    def spool(self, rows: list[dict]) -> Path:
        """Save rows the database could not take before shutdown; the next start replays them."""
        return self._append(SPOOL_FILE, [to_json(row) for row in rows])

    def take_spooled(self) -> list[dict]:
        """Rows spooled by an earlier run, moved aside until :meth:`replayed` says they are in.

        A file left ``.replaying`` by a run that died mid-replay is read again too.
        """
        spool = self.state_dir / SPOOL_FILE
        replaying = spool.with_name(spool.name + _REPLAYING_SUFFIX)
        if spool.exists():
            with self._file_lock, open(replaying, "a", encoding="utf-8") as out:
                out.write(spool.read_text(encoding="utf-8"))
                out.flush()
                os.fsync(out.fileno())
                spool.unlink()
        if not replaying.exists():
            return []
        rows = []
        for number, line in enumerate(replaying.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(from_json(line))
                except ValueError:
                    self._unreadable_spool_lines += 1
                    log.error("ledger: %s line %d is not a row; the file is kept", replaying, number)
        return rows

    def replayed(self) -> None:
        """Every spooled row is committed (or quarantined): the spool's replay copy can go
        (unless a line could not be read: that one waits for a person)."""
        if self._unreadable_spool_lines:
            return
        (self.state_dir / (SPOOL_FILE + _REPLAYING_SUFFIX)).unlink(missing_ok=True)

    def _append(self, name: str, lines: list[str]) -> Path:
        path = self.state_dir / name
        with self._file_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
        return path
