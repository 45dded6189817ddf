"""Shadow sampling obeys the content opt-in (issue #15, item 11).

With ``ledger.store_content: false`` (the default) a card number in a prompt used to land in
``shadow_pairs`` with both answers. Now the texts live only in memory for the comparison; the
database files (SQLite with its WAL) never see them, and the export says why it has nothing.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import sqlalchemy as sa

from support.configs import stub_config
from support.processes import REPO, start_gateway, wait_until
from support.stub_modes import stub_factory  # noqa: F401 - a fixture

CARD = "4111 1111 1111 1111"


def shadow_rows(db_url: str) -> list:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM shadow_pairs ORDER BY id")).all()
    engine.dispose()
    return rows


def test_shadow_pairs_keep_no_text_without_the_content_opt_in(tmp_path, stub_factory):
    stub = stub_factory()
    student = stub_factory(word="secret-answer")
    db_path = tmp_path / "l.db"
    db = f"sqlite:///{db_path}"
    gw = start_gateway(stub_config(stub.url, db, student.url, shadow={"sample_rate": 1.0}), tmp_path, timeout_s=60)
    try:
        for stream in (False, True):
            resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
                "model": "student", "stream": stream,
                "messages": [{"role": "user", "content": f"my card {CARD} was charged twice"}]})
            assert resp.status_code == 200 and resp.headers["x-tierwise-tier"] == "student"
        wait_until(lambda: len(shadow_rows(db)) == 2, 30, "shadow pairs")
    finally:
        gw.stop()
    rows = shadow_rows(db)
    # The comparison still ran (student says "secret-answer", teacher says "tok": no overlap)...
    assert [(r.tier, r.reference_tier, r.agreement) for r in rows] == [("student", "teacher", 0.0)] * 2
    assert all(r.reference_cost > 0 and r.request_id for r in rows)
    # ... but no text was stored, anywhere in the database files.
    assert all(r.prompt is None and r.answer is None and r.reference_answer is None for r in rows)
    for path in tmp_path.glob("l.db*"):
        data = path.read_bytes()
        assert CARD.encode() not in data and b"secret-answer" not in data, path.name

    out = tmp_path / "pairs.csv"
    export = subprocess.run([sys.executable, "-m", "gateway", "shadow", "export", "--out", str(out),
                             "--ledger-url", db], cwd=REPO, capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    assert out.read_text().splitlines() == ["prompt"]  # nothing exportable, and it says why:
    assert "skipped 2 pairs stored without their prompt" in export.stderr


def test_shadow_pairs_keep_text_with_the_content_opt_in(tmp_path, stub_factory):
    stub = stub_factory()
    db = f"sqlite:///{tmp_path / 'l.db'}"
    config = stub_config(stub.url, db, shadow={"sample_rate": 1.0})
    config["ledger"]["store_content"] = True
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
            "model": "student", "messages": [{"role": "user", "content": "my card was charged twice"}]})
        assert resp.status_code == 200
        wait_until(lambda: len(shadow_rows(db)) == 1, 30, "shadow pair")
    finally:
        gw.stop()
    (pair,) = shadow_rows(db)
    assert "charged twice" in pair.prompt and pair.answer == pair.reference_answer and pair.agreement == 1.0
