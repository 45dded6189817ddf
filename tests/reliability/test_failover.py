"""Failover and circuit breaking against real processes: the student's upstream is killed and
brought back while the gateway serves."""

from __future__ import annotations

import httpx
import pytest

from support.configs import stub_config
from support.ledger import ledger_rows
from support.processes import start_gateway, start_stub, wait_until


def chat(gw, model="student", stream=False):
    return httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "where is my card"}]})


@pytest.fixture
def two_upstreams(stub, tmp_path):
    student = start_stub(tmp_path)
    db = tmp_path / "l.db"
    gw = start_gateway(stub_config(stub.url, f"sqlite:///{db}", student.url), tmp_path, timeout_s=60)
    yield gw, student, db
    gw.stop()
    student.stop()


def rows(db) -> list[tuple]:
    return [(r["tier"], r["fallback_from"], r["attempts"], r["status"]) for r in ledger_rows(db)]


def test_student_down_fails_over_then_breaker_opens_then_recovers(two_upstreams, tmp_path):
    gw, student, db = two_upstreams
    assert chat(gw).headers["x-tierwise-tier"] == "student"
    port = int(student.url.rsplit(":", 1)[1])
    student.stop()

    # The next three requests try the student, fail, and are answered by the teacher...
    for _ in range(3):
        resp = chat(gw)
        assert resp.status_code == 200
        assert resp.headers["x-tierwise-tier"] == "teacher"
        assert resp.headers["x-tierwise-fallback-from"] == "student"
    # ... which opens the student's circuit: now it is skipped without a try.
    health = httpx.get(gw.url + "/health").json()["tiers"]["student"]
    assert health["circuit"]["open"] is True
    streamed = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": "student", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert streamed.status_code == 200 and streamed.headers["x-tierwise-tier"] == "teacher"
    assert streamed.text.rstrip().endswith("data: [DONE]")

    # The student comes back on the same port: its health check closes the circuit.
    revived = start_stub(tmp_path, port=port)
    try:
        wait_until(lambda: not httpx.get(gw.url + "/health").json()["tiers"]["student"]["circuit"]["open"],
                   30, "circuit to close")
        resp = chat(gw)
        assert resp.headers["x-tierwise-tier"] == "student" and "x-tierwise-fallback-from" not in resp.headers
    finally:
        revived.stop()
    httpx.get(gw.url + "/v1/costs/summary")
    booked = rows(db)
    assert booked[0] == ("student", None, 1, "ok")
    assert booked[1:4] == [("teacher", "student", 2, "ok")] * 3
    assert booked[4] == ("teacher", "student", 1, "ok")  # circuit open: straight to the teacher
    assert booked[5] == ("student", None, 1, "ok")


def test_client_errors_do_not_fail_over(two_upstreams):
    gw, _, db = two_upstreams
    resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": "student", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400  # beyond the student's context: the client's problem, not the tier's
    assert httpx.get(gw.url + "/health").json()["tiers"]["student"]["circuit"]["consecutive_failures"] == 0
