"""Cut streams are booked what they relayed (issue #15, item 6).

A client that hangs up after 19 of 20 tokens, on a ``url:`` tier whose server reports usage only
at the end, used to be booked 0 tokens and $0. Real gateway, real stub upstream (uvicorn), real
SQLite/Postgres ledgers.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.ledger.schema import make_engine
from support.configs import STUDENT, stub_config
from support.ledger import ledger_row
from support.processes import ServerProcess, start_gateway, wait_until
from support.stub_modes import stub_factory  # noqa: F401 - a fixture

TOKENS = 20
CUT_AFTER = 19


def gateway_for(stub: ServerProcess, tmp: Path, ledger_url: str, continuous: bool) -> ServerProcess:
    config = stub_config(stub.url, ledger_url)
    config["model_list"][1]["url"]["continuous_usage"] = continuous
    return start_gateway(config, tmp, timeout_s=60)


def stream_and_hang_up(gw: ServerProcess, after: int) -> str:
    """Stream from the student, close the connection after ``after`` content chunks; the request id."""
    body = {"model": "student", "stream": True, "messages": [{"role": "user", "content": "where is my card"}]}
    seen = 0
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                assert "usage" not in chunk  # the client did not ask for usage: never shown
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    seen += 1
                    if seen == after:
                        break  # leaving the block closes the connection mid-stream
    return request_id


def row(ledger_url: str, request_id: str) -> tuple:
    """(status, prompt_tokens, completion_tokens, usage_source, cost) of the request, once booked."""
    booked = ledger_row(ledger_url, request_id, wait_s=15)
    return tuple(booked[c] for c in ("status", "prompt_tokens", "completion_tokens", "usage_source", "cost"))


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


def test_hang_up_on_a_tier_without_continuous_usage_is_booked_by_counting(tmp_path, ledger_url, stub_factory):
    stub = stub_factory(tokens=TOKENS, delay_ms=40)
    gw = gateway_for(stub, tmp_path, ledger_url, continuous=False)
    try:
        cut = stream_and_hang_up(gw, CUT_AFTER)
        status, prompt_tokens, completion_tokens, source, cost = row(ledger_url, cut)
        assert status == "client_disconnected"
        assert source == "counted"
        # The gateway may have relayed the 20th token before it saw the hang-up.
        assert CUT_AFTER <= completion_tokens <= TOKENS
        assert prompt_tokens > 0
        assert cost == pytest.approx((prompt_tokens * STUDENT["input_per_million"]
                                      + completion_tokens * STUDENT["output_per_million"]) / 1e6)

        # A stream that ran to the end is booked with the tier's own final usage.
        whole = stream_and_hang_up(gw, TOKENS + 1)
        status, prompt_tokens, completion_tokens, source, _ = row(ledger_url, whole)
        assert (status, completion_tokens, source) == ("ok", TOKENS, "upstream")
        assert prompt_tokens == 4  # the stub's own count ("where is my card")
    finally:
        gw.stop()


def test_hang_up_on_a_tier_with_continuous_usage_is_booked_from_upstream(tmp_path, stub_factory):
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    stub = stub_factory("--continuous-usage", tokens=TOKENS, delay_ms=40)
    gw = gateway_for(stub, tmp_path, ledger_url, continuous=True)
    try:
        cut = stream_and_hang_up(gw, CUT_AFTER)
        status, prompt_tokens, completion_tokens, source, cost = row(ledger_url, cut)
    finally:
        gw.stop()
    assert (status, source, prompt_tokens) == ("client_disconnected", "upstream", 4)
    assert CUT_AFTER <= completion_tokens <= TOKENS and cost > 0


def test_upstream_dropping_mid_stream_is_an_error_booked_by_counting(tmp_path, stub_factory):
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    stub = stub_factory("--drop-after", "5", tokens=TOKENS)
    gw = gateway_for(stub, tmp_path, ledger_url, continuous=False)
    try:
        resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
            "model": "student", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        status, _, completion_tokens, source, cost = row(ledger_url, resp.headers["x-request-id"])
    finally:
        gw.stop()
    assert resp.status_code == 200 and '"error"' in resp.text and resp.text.rstrip().endswith("[DONE]")
    assert (status, completion_tokens, source) == ("error", 5, "counted") and cost > 0


OLD_LEDGER_DDL = """CREATE TABLE ledger_requests (
    id INTEGER PRIMARY KEY, ts TIMESTAMP NOT NULL, request_id VARCHAR(64) NOT NULL UNIQUE,
    api_key_id VARCHAR(64), endpoint VARCHAR(32) NOT NULL, requested_model VARCHAR(256) NOT NULL,
    tier VARCHAR(128), route_policy VARCHAR(32), route_score FLOAT, route_threshold FLOAT,
    fallback_from VARCHAR(128), attempts INTEGER NOT NULL, stream BOOLEAN NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_ms FLOAT, ttft_ms FLOAT,
    status VARCHAR(32) NOT NULL, http_status INTEGER NOT NULL, error TEXT, cost FLOAT NOT NULL,
    teacher_cost FLOAT NOT NULL, "user" VARCHAR(256), prompt TEXT, completion TEXT)"""


def test_a_ledger_made_before_usage_source_gets_the_column(ledger_url):
    """An existing ledger (SQLite or Postgres) from an older gateway keeps working."""
    ddl = OLD_LEDGER_DDL.replace("id INTEGER PRIMARY KEY", "id SERIAL PRIMARY KEY") \
        if ledger_url.startswith("postgresql") else OLD_LEDGER_DDL
    old = sa.create_engine(ledger_url)
    with old.begin() as conn:
        conn.execute(sa.text(ddl))
        conn.execute(sa.text(
            "INSERT INTO ledger_requests (ts, request_id, endpoint, requested_model, attempts, stream, prompt_tokens, "
            "completion_tokens, status, http_status, cost, teacher_cost) VALUES "
            "(CURRENT_TIMESTAMP, 'old-1', 'chat', 'student', 1, false, 3, 4, 'ok', 200, 0.5, 1.0)"))
    old.dispose()
    engine = make_engine(ledger_url)
    make_engine(ledger_url).dispose()  # a second start (or replica) finds the column there
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("ledger_requests")}
        assert "usage_source" in columns
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO ledger_requests (ts, request_id, endpoint, requested_model, attempts, stream, "
                "prompt_tokens, completion_tokens, status, http_status, cost, teacher_cost, usage_source) VALUES "
                "(CURRENT_TIMESTAMP, 'new-1', 'chat', 'student', 1, true, 3, 19, 'client_disconnected', 499, 0.5, "
                "1.0, 'counted')"))
            booked = conn.execute(sa.text(
                "SELECT request_id, usage_source FROM ledger_requests ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in booked] == [("old-1", None), ("new-1", "counted")]


def test_stub_reports_continuous_usage_only_when_asked(stub_factory):
    """The stub behaves like vLLM: running usage only for ``continuous_usage_stats``."""
    stub = stub_factory("--continuous-usage", tokens=3)

    def usages(options: dict) -> list:
        text = httpx.post(stub.url + "/v1/chat/completions", timeout=10, json={
            "model": "m", "stream": True, "stream_options": options,
            "messages": [{"role": "user", "content": "hi"}]}).text
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        return [c.get("usage", {}).get("completion_tokens") for c in chunks]

    assert usages({"include_usage": True}) == [None, None, None, None, 3]
    assert usages({"include_usage": True, "continuous_usage_stats": True}) == [1, 2, 3, None, 3]
