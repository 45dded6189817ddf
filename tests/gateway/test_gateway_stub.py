"""Gateway behaviour that does not depend on a model: real gateway process, real HTTP, a fast
stub OpenAI server as the upstream, a real SQLite ledger."""

from __future__ import annotations

import asyncio
import signal

import httpx
import openai
import pytest

from support.configs import STUDENT, stub_config
from support.ledger import ledger_rows
from support.processes import free_port, start_gateway

@pytest.fixture
def stub_gateway(stub, tmp_path):
    db = tmp_path / "ledger.db"
    gw = start_gateway(stub_config(stub.url, f"sqlite:///{db}"), tmp_path, timeout_s=60)
    gw.db = db
    yield gw
    gw.stop()


def test_graceful_shutdown_flushes_every_row(stub_gateway):
    """Concurrent requests, then SIGTERM: the ledger holds exactly one row per request."""

    async def fire(n: int) -> list[str]:
        async with httpx.AsyncClient(base_url=stub_gateway.url, timeout=30) as client:
            async def one(i: int) -> str:
                stream = i % 3 == 0
                resp = await client.post("/v1/chat/completions", json={
                    "model": "auto" if i % 2 else "teacher", "stream": stream,
                    "messages": [{"role": "user", "content": f"question {i}"}]})
                await resp.aread()
                assert resp.status_code == 200, resp.text
                return resp.headers["x-request-id"]
            return await asyncio.gather(*(one(i) for i in range(n)))

    ids = asyncio.run(fire(150))
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert stub_gateway.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "ledger drained" in stub_gateway.log_text()
    rows = ledger_rows(stub_gateway.db)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" and r["completion_tokens"] == 16 for r in rows)


def test_stream_usage_is_booked_even_when_the_client_does_not_ask(stub_gateway):
    with httpx.stream("POST", stub_gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "teacher", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        request_id = resp.headers["x-request-id"]
    assert events[-1] == "data: [DONE]"
    assert not any('"usage"' in e for e in events), "the client did not ask for usage"
    summary = httpx.get(stub_gateway.url + "/v1/costs/summary").json()
    assert summary["tiers"]["teacher"]["completion_tokens"] == 16
    row = next(r for r in ledger_rows(stub_gateway.db) if r["request_id"] == request_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"]) == (3, 16, 1)
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_savings_arithmetic(stub_gateway):
    client = openai.OpenAI(base_url=stub_gateway.url + "/v1", api_key="unused")
    for model in ["student", "student", "teacher"]:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b c d"}])
    s = httpx.get(stub_gateway.url + "/v1/costs/summary").json()
    # Stub: 4 prompt tokens, 16 completion tokens per request.
    student_cost = 2 * (4 * 0.5 + 16 * 2.0) / 1e6
    teacher_cost_each = (4 * 3.0 + 16 * 15.0) / 1e6
    assert s["tiers"]["student"]["cost"] == pytest.approx(student_cost)
    assert s["total_cost"] == pytest.approx(student_cost + teacher_cost_each)
    assert s["teacher_counterfactual_cost"] == pytest.approx(3 * teacher_cost_each)
    assert s["savings"] == pytest.approx(2 * teacher_cost_each - student_cost)
    assert s["savings_pct"] == pytest.approx(100 * (2 * teacher_cost_each - student_cost) / (3 * teacher_cost_each))


def test_unreachable_tier_is_a_502_and_a_ledger_row(stub, tmp_path):
    db = tmp_path / "l.db"
    config = stub_config(stub.url, f"sqlite:///{db}")
    config["model_list"][1]["url"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens
    config["model_list"][1]["fallbacks"] = []  # a request for the student itself must fail, not fall back
    gw = start_gateway(config, tmp_path, ready_tiers=1, timeout_s=60)
    try:
        health = httpx.get(gw.url + "/health").json()
        assert health["status"] == "degraded" and health["tiers"]["student"]["status"] == "down"
        resp = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "student", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "tier_unavailable"
        # auto prefers the student here but it is down: the strong tier answers instead.
        resp = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200 and resp.headers["x-tierwise-tier"] == "teacher"
    finally:
        gw.stop()
    rows = ledger_rows(db)
    assert [(r["tier"], r["status"], r["http_status"]) for r in rows] == [
        ("student", "rejected", 503), ("teacher", "ok", 200)]
    assert rows[1]["route_policy"] == "fixed+fallback"


def test_missing_student_dir_starts_and_routes_to_what_exists(stub, tmp_path):
    db = tmp_path / "l.db"
    config = stub_config(stub.url, f"sqlite:///{db}")
    config["model_list"][1] = {"model_name": "student", "role": "student", "price": STUDENT,
                               "vllm": {"model": str(tmp_path / "not-distilled-yet")}}
    gw = start_gateway(config, tmp_path, ready_tiers=1, timeout_s=60)
    try:
        health = httpx.get(gw.url + "/health").json()
        assert health["tiers"]["student"]["status"] == "missing"
        models = [m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]]
        assert models == ["auto", "teacher"]
        resp = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200 and resp.headers["x-tierwise-tier"] == "teacher"
    finally:
        gw.stop()
    log = gw.log_text()
    assert "tier student not started" in log and "not-distilled-yet" in log


def test_litellm_provider_tier(stub, tmp_path):
    """A hosted-model tier through litellm (pointed at the stub: no network here)."""
    db = tmp_path / "l.db"
    config = stub_config(stub.url, f"sqlite:///{db}")
    config["model_list"].append({"model_name": "hosted", "price": {"input_per_million": 5, "output_per_million": 20},
                                 "litellm": {"model": "openai/stub", "api_base": stub.url + "/v1",
                                             "api_key_env": "STUB_KEY"}})
    gw = start_gateway(config, tmp_path, timeout_s=90, env={"STUB_KEY": "sk-test"})
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused")
        reply = client.chat.completions.create(model="hosted", messages=[{"role": "user", "content": "x y"}])
        assert reply.choices[0].message.content.startswith("tok")
        chunks = list(client.chat.completions.create(model="hosted", stream=True,
                                                     stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": "x y"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip().startswith("tok")
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        summary = httpx.get(gw.url + "/v1/costs/summary").json()
    finally:
        gw.stop()
    assert summary["tiers"]["hosted"]["requests"] == 2
    assert summary["tiers"]["hosted"]["cost"] == pytest.approx(2 * (2 * 5 + 16 * 20) / 1e6)


def test_litellm_tier_without_price_uses_litellm_cost_map(stub, tmp_path):
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'l.db'}")
    config["model_list"].append({"model_name": "mini", "litellm": {"model": "openai/gpt-4o-mini",
                                                                   "api_base": stub.url + "/v1"}})
    gw = start_gateway(config, tmp_path, timeout_s=90, env={"OPENAI_API_KEY": "sk-test"})
    try:
        resp = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                          json={"model": "mini", "messages": [{"role": "user", "content": "p q r"}]})
        assert resp.status_code == 200, resp.text
        summary = httpx.get(gw.url + "/v1/costs/summary").json()
    finally:
        gw.stop()
    prompt_cost, completion_cost = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=3, completion_tokens=16)
    assert prompt_cost + completion_cost > 0
    assert summary["tiers"]["mini"]["cost"] == pytest.approx(prompt_cost + completion_cost)


def test_metrics_count_requests_by_tier(stub_gateway):
    httpx.post(stub_gateway.url + "/v1/chat/completions",
               json={"model": "teacher", "messages": [{"role": "user", "content": "hi"}]})
    text = httpx.get(stub_gateway.url + "/metrics").text
    assert 'tierwise_requests_total{endpoint="chat",status="ok",tier="teacher"} 1.0' in text
    assert 'tierwise_tier_up{tier="student"} 1.0' in text
    assert "tierwise_request_latency_seconds_bucket" in text


def test_openapi_schema_documents_the_request_bodies(stub_gateway):
    spec = httpx.get(stub_gateway.url + "/openapi.json").json()
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in body["required"] and "model" in body["required"]
    assert {"/v1/completions", "/v1/models", "/health", "/metrics", "/v1/costs/summary"} <= set(spec["paths"])


def test_content_is_stored_only_when_turned_on(stub, tmp_path):
    db = tmp_path / "l.db"
    config = stub_config(stub.url, f"sqlite:///{db}")
    config["ledger"]["store_content"] = True
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        for stream in (False, True):
            with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30, json={
                    "model": "teacher", "stream": stream,
                    "messages": [{"role": "user", "content": "my secret question"}]}) as resp:
                resp.read()
    finally:
        gw.stop()
    rows = ledger_rows(db)
    assert len(rows) == 2
    for row in rows:
        assert "my secret question" in row["prompt"]
        assert row["completion"] == " ".join(["tok"] * 16)
