"""Shadow sampling and drift: real gateway, real HTTP, stub upstreams that agree or not."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa

from support.configs import stub_config
from support.processes import REPO, start_gateway, start_stub, wait_until


def shadow_rows(db_url: str) -> list:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM shadow_pairs ORDER BY id")).all()
    engine.dispose()
    return rows


def ask(gw, text: str, stream: bool = False) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": "student", "stream": stream, "messages": [{"role": "user", "content": text}]})
    return time.perf_counter() - t0, resp


@pytest.fixture
def upstreams(tmp_path):
    slow_teacher = start_stub(tmp_path, tokens=16, token_delay_ms=100)  # 1.6 s per answer
    yield slow_teacher
    slow_teacher.stop()


def test_shadow_pairs_are_recorded_without_delaying_the_client(upstreams, stub, tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    config = stub_config(upstreams.url, db, stub.url, shadow={"sample_rate": 1.0, "max_in_flight": 8})
    config["ledger"]["store_content"] = True  # texts in shadow_pairs only with the opt-in
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        latencies = []
        for i in range(4):
            latency, resp = ask(gw, f"card question {i}", stream=i % 2 == 1)
            assert resp.status_code == 200 and resp.headers["x-tierwise-tier"] == "student"
            latencies.append(latency)
        assert max(latencies) < 1.0, latencies  # the teacher's 1.6 s is never on the client's path
        wait_until(lambda: len(shadow_rows(db)) == 4, 30, "shadow pairs")
        metrics = httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
    rows = shadow_rows(db)
    assert {(r.tier, r.reference_tier, r.agreement) for r in rows} == {("student", "teacher", 1.0)}
    assert all("card question" in r.prompt and r.answer == r.reference_answer for r in rows)
    assert all(r.reference_cost > 0 for r in rows)
    assert "tierwise_shadow_pairs_total 4.0" in metrics and "tierwise_shadow_agreement 1.0" in metrics


def test_drift_alarm_fires_on_a_constructed_drop_and_export_feeds_the_router(tmp_path, stub):
    drifted_student = start_stub(tmp_path, word="something-else")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    config = stub_config(stub.url, db, drifted_student.url,
                         shadow={"sample_rate": 1.0, "min_samples": 5, "floor": 0.5, "step": 0.05})
    config["ledger"]["store_content"] = True  # the export needs the prompts
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        for i in range(6):
            assert ask(gw, f"where is my refund {i}")[1].status_code == 200
        wait_until(lambda: len(shadow_rows(db)) == 6, 30, "shadow pairs")
        metrics = httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
        drifted_student.stop()
    assert "tierwise_drift_alarm 1.0" in metrics
    assert "tierwise_shadow_agreement 0.0" in metrics
    shift = next(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("tierwise_route_threshold_shift"))
    assert shift == pytest.approx(-0.10)  # pairs 5 and 6 each moved it one step toward the teacher
    assert "below the floor" in gw.log_text()

    out = tmp_path / "pairs.csv"
    subprocess.run([sys.executable, "-m", "gateway", "shadow", "export", "--out", str(out), "--ledger-url", db],
                   cwd=REPO, check=True, capture_output=True)
    with open(out) as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 6
    assert exported[0] == {"prompt": "where is my refund 0", "student": "False", "teacher": "True"}


def test_threshold_policy_applies_the_shift():
    from gateway.routing.policy import ThresholdPolicy

    class Constant:
        threshold = 0.5

        def score(self, messages):
            return 0.45

    policy = ThresholdPolicy(Constant(), "teacher", "student")
    assert policy.route([]).tier == "student"
    policy.set_shift(-0.1)
    decision = policy.route([])
    assert (decision.tier, decision.threshold) == ("teacher", pytest.approx(0.4))
