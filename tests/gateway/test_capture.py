"""Content capture for the flywheel (issue #13 item 1): a real gateway over real HTTP (the
OpenAI SDK), stub upstreams, real SQLite and PostgreSQL ledgers.

Captured: teacher answers of opted-in workloads (and, with auth on, opted-in keys), redacted,
with the teacher's top-k logprobs that the gateway asked for without the client seeing them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openai import OpenAI

from gateway.capture.store import CaptureStore
from gateway.config import CaptureConfig
from gateway.ledger.schema import make_engine
from support.configs import stub_config
from support.ledger import ledger_row, ledger_rows
from support.processes import REPO, start_gateway, wait_until

HEADER = "x-tierwise-workload"


def captures(db: str) -> list[dict]:
    return ledger_rows(db, "captures")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_teacher_answers_of_listed_workloads_are_captured_redacted_with_hidden_logprobs(stub, tmp_path, db):
    config = stub_config(stub.url, db, capture={"enabled": True, "workloads": ["support"], "logprobs_top_k": 2})
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        client = OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        support = {"extra_headers": {HEADER: "support"}}
        raw = client.chat.completions.with_raw_response.create(
            model="teacher", messages=[{"role": "system", "content": "You are a bank's assistant."},
                                       {"role": "user", "content": "I'm ann@example.com, card 4111 1111 1111 1111"}],
            **support)
        reply = raw.parse()
        assert reply.choices[0].logprobs is None  # asked of the tier by the gateway, not shown to the client
        kept_id = raw.headers["x-request-id"]
        # The client's own logprobs request is honoured (and kept too).
        asked = client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "hi"}],
                                               logprobs=True, top_logprobs=2, **support)
        assert asked.choices[0].logprobs is not None and len(asked.choices[0].logprobs.content[0].top_logprobs) == 2
        streamed = client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "stream me"}],
                                                  stream=True, **support)
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        # Not captured: the student's answers, other workloads, no header (the default workload).
        client.chat.completions.create(model="student", messages=[{"role": "user", "content": "x"}], **support)
        client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={HEADER: "marketing"})
        client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "x"}])
        wait_until(lambda: len(captures(db)) >= 3, 20, "captured rows")
    finally:
        gw.stop()
    rows = {r["request_id"]: r for r in captures(db)}
    assert len(rows) == 3 and {r["workload"] for r in rows.values()} == {"support"}
    kept = rows[kept_id]
    request = json.loads(kept["request_json"])
    assert "ann@example.com" not in kept["request_json"] and "4111" not in kept["request_json"]
    assert request["messages"][1]["content"] == "I'm [EMAIL], card [CARD]" and kept["redactions"] == 2
    assert "logprobs" not in request  # the client's request as sent, not the gateway's addition
    logprobs = json.loads(kept["logprobs_json"])
    assert logprobs and len(logprobs[0]["top_logprobs"]) == 2 and logprobs[0]["token"]
    assert json.loads(kept["response_json"])["choices"][0]["message"]["content"] == reply.choices[0].message.content
    assert kept["tier"] == "teacher" and kept["endpoint"] == "chat.completions" and kept["completion_tokens"] > 0
    stream_row = next(r for r in rows.values() if "stream me" in r["request_json"])
    assert json.loads(stream_row["response_json"])["choices"][0]["message"]["content"] == streamed_text
    assert stream_row["logprobs_json"] is None  # streams are captured without logprobs
    assert ledger_row(db, kept_id)["workload"] == "support"
    assert {r["workload"] for r in ledger_rows(db)} == {"support", "marketing", "default"}


def test_with_auth_only_opted_in_keys_are_captured_and_bad_workloads_get_a_400(stub, tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_engine(db).dispose()
    secrets = {}
    for name, flags in (("plain", []), ("optin", ["--capture"])):
        out = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", name, *flags, "--ledger-url", db],
                             cwd=REPO, capture_output=True, text=True, check=True)
        secrets[name] = out.stdout.strip().splitlines()[-1]
    config = stub_config(stub.url, db, auth=True, capture={"enabled": True})
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        for name in ("plain", "optin"):
            resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {secrets[name]}", HEADER: "support"},
                              json={"model": "teacher", "messages": [{"role": "user", "content": f"from {name}"}]})
            assert resp.status_code == 200, resp.text
        bad = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                         headers={"authorization": f"Bearer {secrets['optin']}", HEADER: "no spaces allowed!"},
                         json={"model": "teacher", "messages": [{"role": "user", "content": "x"}]})
        wait_until(lambda: len(captures(db)) >= 1, 20, "captured rows")
    finally:
        gw.stop()
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_workload"
    assert [json.loads(r["request_json"])["messages"][0]["content"] for r in captures(db)] == ["from optin"]


def test_retention_purge_size_cap_and_per_workload_counts(tmp_path, db):
    from gateway.capture.store import CapturedPair

    engine = make_engine(db)
    store = CaptureStore(engine, CaptureConfig(enabled=True, retention_days=7, max_record_bytes=2_000))
    now = datetime.now(UTC)

    def pair(i: int, age_days: float, text: str = "where is my card?") -> CapturedPair:
        return CapturedPair(request_id=f"r{i}", ts=now - timedelta(days=age_days), workload="support" if i % 2 else "mmlu",
                            api_key_id=None, endpoint="chat.completions", tier="teacher",
                            request={"messages": [{"role": "user", "content": text}]},
                            response={"choices": [{"message": {"role": "assistant", "content": "Intent: card_arrival"}}]},
                            logprobs=None, prompt_tokens=5, completion_tokens=4)

    try:
        written = store.write([pair(1, 10), pair(2, 1), pair(3, 0.5), pair(4, 0, "x" * 5_000), pair(3, 0)])
        assert written == 3 and store.dropped == 1  # r4 over the size cap; the second r3 is a duplicate
        assert store.counts() == {"support": 2, "mmlu": 1}
        assert store.purge_expired() == 1  # r1, 10 days old
        assert [r["request_id"] for r in store.iter_records("support")] == ["r3"]
        cli = subprocess.run([sys.executable, "-m", "gateway", "capture", "stats", "--ledger-url", db],
                             cwd=REPO, capture_output=True, text=True, check=True)
        assert cli.stdout.split() == ["mmlu", "1", "support", "1"]
    finally:
        engine.dispose()
