"""The drift monitor's state in the ledger database (``drift_state``), shared by replicas and
kept across restarts (issue #13 item 6).

Each replica keeps a ``DriftMonitor`` in memory for its metrics and routing shift; every shadow
pair it observes is applied as a read-modify-write of the shared row in one transaction (the
row locked with ``FOR UPDATE`` on PostgreSQL; SQLite serialises writers), so the rolling
window holds the pairs of every replica, and a restarted replica resumes with the window, the
alarm and the threshold shift as they were. A replica picks up the others' pairs on its next
own pair (or at start-up). The database being away never stops shadowing: the pair is then
observed in memory only, and logged.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.ledger.schema import drift_state_table
from gateway.shadow.drift import DriftMonitor

log = logging.getLogger("gateway.shadow")


class DriftStateStore:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name  # the monitored tier pair, e.g. "student->teacher"
        self._lock = threading.Lock()  # shadow tasks observe from worker threads

    def load(self, monitor: DriftMonitor) -> bool:
        """Restore ``monitor`` from the shared row; False when there is none (or no database)."""
        try:
            with self.engine.connect() as conn:
                state = conn.execute(sa.select(drift_state_table.c.state_json)
                                     .where(drift_state_table.c.name == self.name)).scalar()
        except Exception as exc:  # noqa: BLE001 - a fresh monitor is the safe default
            log.warning("shadow: drift state not loaded (%s); starting from an empty window", exc)
            return False
        if state is None:
            return False
        with self._lock:
            monitor.restore(json.loads(state))
        return True

    def observe(self, monitor: DriftMonitor, score: float) -> None:
        """Apply ``score`` to the shared state and mirror the result in ``monitor`` (blocking: run in a thread)."""
        with self._lock:
            try:
                with self.engine.begin() as conn:
                    stmt = sa.select(drift_state_table.c.state_json).where(drift_state_table.c.name == self.name)
                    if conn.dialect.name == "postgresql":
                        stmt = stmt.with_for_update()
                    state = conn.execute(stmt).scalar()
                    if state is not None:
                        monitor.restore(json.loads(state))
                    monitor.observe(score)
                    values = {"state_json": json.dumps(monitor.snapshot()), "updated_at": datetime.now(UTC)}
                    if state is None:
                        conn.execute(drift_state_table.insert().values(name=self.name, **values))
                    else:
                        conn.execute(drift_state_table.update().where(drift_state_table.c.name == self.name)
                                     .values(**values))
            except Exception as exc:  # noqa: BLE001 - monitoring degrades to this replica alone
                log.warning("shadow: drift state not shared (%s); observed on this replica only", exc)
                monitor.observe(score)
