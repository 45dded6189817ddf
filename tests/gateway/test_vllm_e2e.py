"""End to end with real vLLM: the gateway starts two vLLM CPU servers (the packaged teacher and
a 4-layer model built from it), and the official OpenAI client talks to the gateway over HTTP.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from support.ledger import ledger_row as read_ledger_row
from support.models import STUDENT_PRICE, TEACHER_PRICE

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


@pytest.fixture(scope="module")
def client(vllm_gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ledger_row(vllm_gateway, request_id: str) -> dict:
    httpx.get(vllm_gateway.url + "/v1/costs/summary")  # flushes pending rows
    return read_ledger_row(vllm_gateway.config["ledger"]["url"], request_id)


def expected_cost(price: dict, usage) -> float:
    return (usage.prompt_tokens * price["input_per_million"] + usage.completion_tokens * price["output_per_million"]) / 1e6


@pytest.mark.parametrize("model, tier, price", [("teacher", "teacher", TEACHER_PRICE),
                                                ("flagship", "teacher", TEACHER_PRICE),
                                                ("student", "student", STUDENT_PRICE)])
def test_chat_by_name_is_booked_with_cost_and_counterfactual(vllm_gateway, client, model, tier, price):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=12,
                                                            temperature=0, user="test-user")
    reply = raw.parse()
    assert raw.headers["x-tierwise-tier"] == tier
    assert reply.model == tier
    assert reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 12
    row = ledger_row(vllm_gateway, raw.headers["x-request-id"])
    assert (row["tier"], row["requested_model"], row["status"], row["user"]) == (tier, model, "ok", "test-user")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert row["cost"] == pytest.approx(expected_cost(price, reply.usage))
    assert row["teacher_cost"] == pytest.approx(expected_cost(TEACHER_PRICE, reply.usage))
    assert row["latency_ms"] > 0 and row["ttft_ms"] is None


def test_streaming_arrives_incrementally_with_usage_last(vllm_gateway, client):
    started = time.perf_counter()
    arrivals, text, usage = [], [], None
    stream = client.chat.completions.create(model="teacher", messages=HELLO, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        arrivals.append(time.perf_counter() - started)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
            assert not chunk.choices, "usage comes in its own final chunk"
    assert usage is not None and 0 < usage.completion_tokens <= 24
    assert "".join(text).strip()
    assert len(arrivals) >= 10
    # Relayed as generated, not buffered: the second half of the answer is still arriving well after
    # its middle (a buffered relay delivers every chunk within a millisecond or two). Not a share of
    # the total: under load the time to the first token alone can exceed it (1.4 s of 2.2 s in CI).
    assert arrivals[-1] - arrivals[len(arrivals) // 2] > 0.03, arrivals


def test_streaming_without_usage_request_still_books_tokens(vllm_gateway, client):
    raw = client.chat.completions.with_raw_response.create(model="student", messages=HELLO, max_tokens=8,
                                                            temperature=0, stream=True)
    chunks = list(raw.parse())
    assert all(c.usage is None for c in chunks)
    row = ledger_row(vllm_gateway, raw.headers["x-request-id"])
    assert row["stream"] and row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    assert 0 < row["ttft_ms"] <= row["latency_ms"]


def test_sampling_parameters_pass_through(client):
    reply = client.chat.completions.create(model="student", messages=HELLO, max_tokens=5, n=2, temperature=0.8,
                                           seed=1, logprobs=True, top_logprobs=3, stop=["\n\n"])
    assert len(reply.choices) == 2
    top = reply.choices[0].logprobs.content[0].top_logprobs
    assert len(top) == 3


def test_text_completions(vllm_gateway, client):
    raw = client.completions.with_raw_response.create(model="teacher", prompt="The capital of France is",
                                                      max_tokens=5, temperature=0)
    reply = raw.parse()
    assert reply.choices[0].text and reply.usage.completion_tokens > 0
    assert ledger_row(vllm_gateway, raw.headers["x-request-id"])["endpoint"] == "completion"


def test_models_lists_tiers_aliases_and_auto(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"auto", "teacher", "flagship", "student"}


def test_auto_is_routed_and_scored(vllm_gateway, client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=4)
    assert raw.headers["x-tierwise-tier"] in {"teacher", "student"}
    row = ledger_row(vllm_gateway, raw.headers["x-request-id"])
    assert row["requested_model"] == "auto" and row["tier"] == raw.headers["x-tierwise-tier"]
    if row["route_policy"] == "trained":
        assert float(raw.headers["x-tierwise-route-score"]) == pytest.approx(row["route_score"], abs=1e-4)
        assert (row["tier"] == "teacher") == (row["route_score"] >= row["route_threshold"])
    else:
        assert row["route_policy"] == "fixed" and row["tier"] == "teacher"


EASY = "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome\nAnswer:"
HARD = ("Which of the following propositions is an immediate (one-step) consequence in PL of the given premises?\n"
        "(A \u2228 B) \u2283 (C \u2228 D)\nA \u2228 B\n~C\nA. ~A \u2228 ~B\nB. ~~C\nC. C \u2228 D\n"
        "D. (A \u2228 B) \u2283 D\nAnswer:")


def test_trained_router_sends_easy_and_hard_prompts_to_different_tiers(vllm_gateway, client):
    """The shipped scikit-learn artifact behind `auto`: the score and threshold decide the tier."""
    from router import load_router

    artifact = load_router(vllm_gateway.config["router"]["artifact"])
    tiers = {}
    for name, prompt in (("easy", EASY), ("hard", HARD)):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=2, messages=[{"role": "user", "content": prompt}])
        score = float(raw.headers["x-tierwise-route-score"])
        assert score == pytest.approx(artifact.score([{"role": "user", "content": prompt}]), abs=1e-4)
        row = ledger_row(vllm_gateway, raw.headers["x-request-id"])
        assert row["route_policy"] == "trained" and row["route_threshold"] == pytest.approx(artifact.threshold)
        tiers[name] = raw.headers["x-tierwise-tier"]
    assert tiers == {"easy": "student", "hard": "teacher"}


def test_health_reports_each_vllm_tier(vllm_gateway):
    health = httpx.get(vllm_gateway.url + "/health").json()
    assert health["status"] == "ok"
    for name in ("teacher", "student"):
        tier = health["tiers"][name]
        assert tier["status"] == "ready" and tier["kind"] == "vllm" and tier["pid"] > 0


BAD_INPUTS = [
    (b"{not json", "application/json", 400, None),
    ('{"model": "teacher", "messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1"),
     "application/json", 400, None),
    (b'{"model": "teacher"}', "application/json", 400, "messages"),
    (b'{"model": "teacher", "messages": []}', "application/json", 400, "messages"),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": ""}]}', "application/json", 400, None),
    (b'{"model": "teacher", "messages": "hello"}', "application/json", 400, "messages"),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}',
     "application/json", 400, "max_tokens"),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
     "application/json", 400, "temperature"),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}',
     "application/json", 400, "max_tokens"),
    (b'{"model": "gpt-nonexistent", "messages": [{"role": "user", "content": "hi"}]}', "application/json", 404,
     "model"),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": "hi"}]}', "text/plain", 415, None),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, None),
    (b'{"model": "teacher", "messages": [{"role": "user", "content": "' + b"x" * 2_000_000 + b'"}]}',
     "application/json", 413, None),
]


@pytest.mark.parametrize("body, content_type, status, param", BAD_INPUTS,
                         ids=["invalid-json", "invalid-utf8", "missing-messages", "empty-messages",
                              "empty-content", "messages-wrong-type", "max-tokens-wrong-type",
                              "negative-temperature", "max-tokens-beyond-context", "unknown-model",
                              "wrong-content-type", "deeply-nested", "oversize-body"])
def test_bad_input_is_an_openai_4xx(vllm_gateway, body, content_type, status, param):
    resp = httpx.post(vllm_gateway.url + "/v1/chat/completions", content=body,
                      headers={"content-type": content_type}, timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert "Traceback" not in resp.text
    if param:
        assert error["param"] == param
    # ... and the gateway keeps serving.
    ok = httpx.post(vllm_gateway.url + "/v1/chat/completions", timeout=60,
                    json={"model": "student", "messages": HELLO, "max_tokens": 2})
    assert ok.status_code == 200


def test_prompt_beyond_context_is_relayed_as_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="student", max_tokens=10,
                                       messages=[{"role": "user", "content": "word " * 2000}])
    assert info.value.status_code == 400


def test_client_disconnect_cancels_generation_and_books_partial_usage(vllm_gateway):
    """Hang up mid-stream: vLLM stops generating, and the row holds the tokens sent so far."""
    port = vllm_gateway.config["model_list"][0]["vllm"]["port"]  # the teacher's vLLM server

    def running() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:num_requests_running"))

    started = time.perf_counter()
    with httpx.stream("POST", vllm_gateway.url + "/v1/chat/completions", timeout=60, json={
            "model": "teacher", "max_tokens": 400, "temperature": 0.7, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a lost bank card."}]}) as resp:
        request_id = resp.headers["x-request-id"]
        chunks = 0
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
            if chunks == 8:
                break
    deadline = time.perf_counter() + 10
    while running() > 0:
        assert time.perf_counter() < deadline, "vLLM kept generating after the client left"
        time.sleep(0.2)
    # 400 tokens at this CPU's speed would take far longer than the time it took to stop.
    assert time.perf_counter() - started < 20
    row = ledger_row(vllm_gateway, request_id)
    assert row["status"] == "client_disconnected" and row["http_status"] == 499
    assert 5 <= row["completion_tokens"] < 400 and row["prompt_tokens"] > 0
    assert row["cost"] > 0


def test_supervisor_restarts_a_dead_vllm_tier(vllm_gateway, client):
    """Kill the student's vLLM process: the gateway notices, restarts it, and traffic returns.

    Runs last in this module (it costs a vLLM start-up)."""
    import os
    import signal

    from support.processes import wait_until

    before = httpx.get(vllm_gateway.url + "/health").json()["tiers"]["student"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        tier = httpx.get(vllm_gateway.url + "/health", timeout=5).json()["tiers"]["student"]
        return tier["status"] == "ready" and tier["restarts"] == before["restarts"] + 1

    wait_until(restarted, 600, "student tier restart")
    after = httpx.get(vllm_gateway.url + "/health").json()["tiers"]["student"]
    assert after["pid"] != before["pid"]
    # Nothing of the dead server's process group (its engine core) is left holding memory.
    with pytest.raises(ProcessLookupError):
        os.killpg(before["pid"], 0)
    reply = client.chat.completions.create(model="student", messages=HELLO, max_tokens=3)
    assert reply.choices[0].message.content is not None
