"""Drift state in the database (issue #13 item 6): replicas share one rolling window, and a
restarted replica resumes the alarm and the routing shift. Real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from gateway.config import ShadowConfig
from gateway.ledger.schema import make_engine
from gateway.shadow.drift import DriftMonitor
from gateway.shadow.drift_store import DriftStateStore

CONFIG = ShadowConfig(sample_rate=1.0, window=6, min_samples=4, floor=0.5, step=0.05, max_shift=0.2)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_two_replicas_share_one_window_and_a_restart_resumes_the_alarm(db):
    engine = make_engine(db)
    try:
        replica_a, replica_b = DriftMonitor(CONFIG), DriftMonitor(CONFIG)
        store_a, store_b = DriftStateStore(engine, "student->teacher"), DriftStateStore(engine, "student->teacher")
        # Neither replica alone sees min_samples pairs; together they see four low ones.
        for score, (monitor, store) in zip([0.1, 0.2, 0.1, 0.2], [(replica_a, store_a), (replica_b, store_b)] * 2):
            store.observe(monitor, score)
        assert replica_b.scores == pytest.approx([0.1, 0.2, 0.1, 0.2]) and replica_b.alarm
        assert replica_b.threshold_shift == pytest.approx(-0.05)
        store_a.observe(replica_a, 0.1)  # A picks up B's pairs with its own
        assert len(replica_a.scores) == 5 and replica_a.threshold_shift == pytest.approx(-0.10)

        restarted = DriftMonitor(CONFIG)
        assert DriftStateStore(engine, "student->teacher").load(restarted)
        assert restarted.alarm and restarted.threshold_shift == pytest.approx(-0.10) and len(restarted.scores) == 5
        assert not DriftStateStore(engine, "other->teacher").load(DriftMonitor(CONFIG))  # per monitored pair
    finally:
        engine.dispose()


def test_a_database_that_is_away_degrades_to_this_replica(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    engine.dispose()
    (tmp_path / "ledger.db").unlink()
    (tmp_path / "ledger.db").mkdir()  # the file is now a directory: every connection fails
    monitor = DriftMonitor(CONFIG)
    store = DriftStateStore(engine, "student->teacher")
    assert not store.load(monitor)
    store.observe(monitor, 0.3)
    assert list(monitor.scores) == [0.3]
