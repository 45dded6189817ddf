"""Fuzzing the gateway over real HTTP: schemathesis generates requests from the gateway's own
OpenAPI schema (valid and invalid), plus hand-made hostile inputs. No 5xx, every error in
OpenAI's shape, the gateway stays up, and every request that reached a handler is booked."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from support.configs import stub_config
from support.fuzz import run_schemathesis
from support.processes import start_gateway

CASES = {"count": 0}


@pytest.fixture(scope="module")
def fuzz_gateway(stub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    gw = start_gateway(stub_config(stub.url, f"sqlite:///{tmp / 'l.db'}"), tmp, timeout_s=60)
    yield gw
    gw.stop()
    assert "Traceback" not in gw.log_text()


def assert_openai_error(resp) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_schema_fuzz(fuzz_gateway):
    """Requests generated from the OpenAPI schema, valid and not: no 5xx, OpenAI-shaped errors."""
    run = run_schemathesis(fuzz_gateway.url, max_examples=40, seed=20261123)
    assert run.returncode == 0, run.output[-4000:]
    assert run.generated >= 500 and run.passed == run.generated, run.output[-2000:]
    CASES["count"] += run.generated


HOSTILE = [
    ("invalid utf-8", b'{"model": "teacher", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "application/json"),
    ("lone surrogate", b'{"model": "teacher", "messages": [{"role": "user", "content": "\\udc00"}]}', "application/json"),
    ("deep nesting", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    ("huge string", json.dumps({"model": "teacher", "messages": [{"role": "user", "content": "x" * 5_000_000}]}).encode(),
     "application/json"),
    ("NaN temperature", b'{"model": "teacher", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}',
     "application/json"),
    ("Infinity max_tokens", b'{"model": "teacher", "max_tokens": Infinity, "messages": [{"role": "user", "content": "h"}]}',
     "application/json"),
    ("negative max_tokens", b'{"model": "teacher", "max_tokens": -5, "messages": [{"role": "user", "content": "h"}]}',
     "application/json"),
    ("negative n", b'{"model": "teacher", "n": -1, "messages": [{"role": "user", "content": "h"}]}', "application/json"),
    ("huge n", b'{"model": "teacher", "n": 100000000000000000000, "messages": [{"role": "user", "content": "h"}]}',
     "application/json"),
    ("too many messages", json.dumps({"model": "teacher", "messages": [{"role": "user", "content": "h"}] * 1000}).encode(),
     "application/json"),
    ("wrong role", b'{"model": "teacher", "messages": [{"role": "wizard", "content": "h"}]}', "application/json"),
    ("null body", b"null", "application/json"),
    ("form content type", b"model=teacher", "application/x-www-form-urlencoded"),
    ("multipart", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
    ("no body", b"", "application/json"),
    ("model object", b'{"model": {"$gt": ""}, "messages": [{"role": "user", "content": "h"}]}', "application/json"),
]


@pytest.mark.parametrize("name, body, content_type", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs(fuzz_gateway, name, body, content_type):
    CASES["count"] += 1
    resp = httpx.post(fuzz_gateway.url + "/v1/chat/completions", content=body,
                      headers={"content-type": content_type}, timeout=30)
    assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[:300])
    assert_openai_error(resp)
    assert httpx.get(fuzz_gateway.url + "/health").status_code == 200


def test_every_handled_request_is_booked(fuzz_gateway):
    """After all of the above, the ledger and the request counter agree (nothing was lost)."""
    summary = httpx.get(fuzz_gateway.url + "/v1/costs/summary").json()
    assert summary["requests"] > 0
    metrics = httpx.get(fuzz_gateway.url + "/metrics").text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("tierwise_requests_total{"))
    assert summary["requests"] == counted > 0 and not math.isnan(counted)
    print(f"fuzz: {CASES['count']} cases sent, {summary['requests']} reached a sampling handler and were booked")
