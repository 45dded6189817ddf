"""What support-bot backends send (issue #14), through a real gateway process and the official
``openai`` SDK, on stub upstreams: capability-aware routing (tools, response_format, images),
``/v1/embeddings``, per-tenant cost grouping and bounded Prometheus labels, and compute prices
derived from a tier's measured throughput. The same features against real vLLM tiers are in
``test_support_bot_vllm.py``.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from support.configs import STUDENT
from support.ledger import ledger_row
from support.processes import start_gateway, start_stub

PER_HOUR = 0.36  # the teacher's machine, $/hour: 1e-4 $/s
ASSUMED_TPS = 40.0
TOOLS = [{"type": "function", "function": {"name": "get_balance", "description": "Balance of an account",
                                           "parameters": {"type": "object", "properties": {"account": {"type": "string"}},
                                                          "required": ["account"]}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("support-bot")


@pytest.fixture(scope="module")
def slow_stub(tmp):
    """An upstream that takes 20 ms per token, so throughput is measurable (16 tokens in 0.32 s)."""
    server = start_stub(tmp, token_delay_ms=20, word="slow")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(stub, slow_stub, tmp):
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    config = {
        "model_list": [
            {"model_name": "teacher", "role": "teacher", "url": {"base_url": slow_stub.url + "/v1",
                                                                  "metrics_url": slow_stub.url + "/metrics"},
             "price": {"per_hour": PER_HOUR, "assumed_tokens_per_s": ASSUMED_TPS},
             "supports": {"tools": True, "modalities": ["text", "image"]}},
            {"model_name": "student", "role": "student", "price": STUDENT, "url": {"base_url": stub.url + "/v1"},
             "supports": {"structured_output": False}},
            {"model_name": "embedder", "price": {"input_per_million": 0.02, "output_per_million": 0.0},
             "url": {"base_url": stub.url + "/v1"}, "supports": {"embeddings": True, "chat": False}},
        ],
        "router": {"policy": "fixed", "default_tier": "student", "strong_tier": "teacher"},
        "ledger": {"url": ledger},
        "auth": {"enabled": False},
        "server": {"throughput_poll_s": 0.1, "throughput_window_s": 60},
    }
    gw = start_gateway(config, tmp, timeout_s=120)
    gw.ledger = ledger
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def row(gateway, request_id: str) -> dict:
    httpx.get(gateway.url + "/v1/costs/summary")  # flushes pending rows
    return ledger_row(gateway.ledger, request_id)


def ask(client, model: str, content, **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=16, **kwargs)


# -- capabilities ----------------------------------------------------------------------------

def test_tools_named_at_a_tier_without_them_are_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "student", "balance of 42?", tools=TOOLS)
    body = err.value.body
    assert body["code"] == "unsupported_by_tier" and body["param"] == "tools"
    assert "`student`" in body["message"] and "tools" in body["message"]


def test_auto_sends_tool_requests_only_to_tiers_with_tools(gateway, client):
    plain = ask(client, "auto", "balance of 42?")
    assert plain.headers["x-tierwise-tier"] == "student"  # the fixed policy's choice
    raw = ask(client, "auto", "balance of 42?", tools=TOOLS, tool_choice="auto")
    assert raw.headers["x-tierwise-tier"] == "teacher"
    r = row(gateway, raw.headers["x-request-id"])
    assert (r["tier"], r["fallback_from"], r["route_policy"]) == ("teacher", "student", "fixed+capability")
    # tool_choice "none" needs no tool support: the router's choice stands.
    assert ask(client, "auto", "hi", tools=TOOLS, tool_choice="none").headers["x-tierwise-tier"] == "student"


def test_a_history_with_tool_calls_needs_a_tool_tier(client):
    history = [{"role": "user", "content": "balance of 42?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_balance",
                                                                     "arguments": '{"account": "42"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": '{"balance": 12.5}'}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=history, max_tokens=8)
    assert raw.headers["x-tierwise-tier"] == "teacher"
    with pytest.raises(openai.BadRequestError, match="`student` does not support tools"):
        client.chat.completions.create(model="student", messages=history, max_tokens=8)


def test_response_format_skips_tiers_without_structured_output(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {
        "type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}}
    assert ask(client, "auto", "classify", response_format=fmt).headers["x-tierwise-tier"] == "teacher"
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "student", "classify", response_format={"type": "json_object"})
    assert err.value.body["param"] == "response_format" and "`student`" in err.value.body["message"]


def test_images_never_reach_a_text_only_tier(client):
    content = [{"type": "text", "text": "what is on this receipt?"}, IMAGE]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "student", content)
    assert err.value.body["code"] == "unsupported_by_tier"
    assert "`student`" in err.value.body["message"] and "image input" in err.value.body["message"]
    assert ask(client, "auto", content).headers["x-tierwise-tier"] == "teacher"
    audio = [{"type": "text", "text": "transcribe"}, {"type": "input_audio", "input_audio": {"data": "AA==",
                                                                                             "format": "wav"}}]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "auto", audio)
    assert err.value.body["code"] == "unsupported_by_tiers" and "audio input" in err.value.body["message"]


def test_models_list_shows_what_each_tier_supports(gateway):
    cards = {m["id"]: m for m in httpx.get(gateway.url + "/v1/models").json()["data"]}
    assert cards["teacher"]["tierwise"]["supports"]["tools"] is True
    assert cards["student"]["tierwise"]["supports"]["modalities"] == ["text"]
    assert cards["embedder"]["tierwise"]["supports"]["embeddings"] is True


# -- embeddings ------------------------------------------------------------------------------

def test_embeddings_through_the_sdk_are_booked(gateway, client):
    raw = client.embeddings.with_raw_response.create(model="embedder", input=["lost card", "card arrival"],
                                                     user="tenant-e")
    reply = raw.parse()
    assert [d.index for d in reply.data] == [0, 1] and len(reply.data[0].embedding) == 8
    assert reply.data[0].embedding != reply.data[1].embedding
    r = row(gateway, raw.headers["x-request-id"])
    assert (r["endpoint"], r["tier"], r["status"], r["user"]) == ("embeddings", "embedder", "ok", "tenant-e")
    assert r["prompt_tokens"] == reply.usage.prompt_tokens == 4 and r["completion_tokens"] == 0
    assert r["cost"] == pytest.approx(4 * 0.02 / 1e6)
    auto = client.embeddings.with_raw_response.create(model="auto", input="hello")
    assert auto.headers["x-tierwise-tier"] == "embedder"


def test_embeddings_refuse_tiers_and_inputs_they_cannot_take(gateway, client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="student", input="hello")
    assert err.value.body["code"] == "unsupported_by_tier" and "`student`" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embedder", input=[])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    # A chat request to the embedding-only tier is refused, not relayed.
    with pytest.raises(openai.BadRequestError, match="`embedder` does not support chat"):
        ask(client, "embedder", "hi")


# -- per-tenant reporting --------------------------------------------------------------------

def test_costs_group_by_user_workload_and_key(gateway, client):
    for user, workload, n in (("tenant-a", "support", 3), ("tenant-b", "billing", 2)):
        for _ in range(n):
            client.chat.completions.create(model="student", messages=[{"role": "user", "content": "a b"}],
                                           user=user, extra_headers={"x-tierwise-workload": workload})
    users = httpx.get(gateway.url + "/v1/costs/summary", params={"group_by": "user"}).json()
    assert users["group_by"] == "user"
    assert users["groups"]["tenant-a"]["requests"] == 3 and users["groups"]["tenant-b"]["requests"] == 2
    expected = (2 * STUDENT["input_per_million"] + 16 * STUDENT["output_per_million"]) / 1e6
    assert users["groups"]["tenant-b"]["cost"] == pytest.approx(2 * expected)
    assert sum(g["requests"] for g in users["groups"].values()) == users["requests"]
    series = httpx.get(gateway.url + "/v1/costs/timeseries", params={"group_by": "workload", "bucket": "hour"}).json()
    assert series["group_by"] == "workload" and "tiers" not in series["data"][-1]
    workloads = {name: 0 for name in ("support", "billing")}
    for point in series["data"]:
        for name in workloads:
            workloads[name] += point["groups"].get(name, {}).get("requests", 0)
    assert workloads == {"support": 3, "billing": 2}
    keys = httpx.get(gateway.url + "/v1/costs/summary", params={"group_by": "key"}).json()
    assert set(keys["groups"]) == {"none"}  # auth is off: no keys
    bad = httpx.get(gateway.url + "/v1/costs/summary", params={"group_by": "color"})
    assert bad.status_code == 400


def test_prometheus_tenant_labels_are_bounded(gateway, client):
    for i in range(30):  # 30 one-off users: none of them earns a label of its own
        client.chat.completions.create(model="student", messages=[{"role": "user", "content": "x"}], user=f"u{i}")
    for _ in range(5):
        client.chat.completions.create(model="student", messages=[{"role": "user", "content": "x"}], user="steady")
    text = httpx.get(gateway.url + "/metrics").text
    values = {line.split('value="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith('tierwise_tenant_requests_total{dimension="user"')}
    assert "steady" in values and "other" in values
    assert not any(v.startswith("u") and v[1:].isdigit() for v in values)
    assert len(values) <= 20 + 2  # top N, other, none


# -- compute prices --------------------------------------------------------------------------

def test_per_hour_price_uses_the_measured_throughput_and_books_its_basis(gateway, client):
    first = ask(client, "teacher", "a b c")
    r = row(gateway, first.headers["x-request-id"])
    if r["price_source"] == "assumed":  # nothing measured yet: the configured stand-in
        assert r["price_tokens_per_s"] == ASSUMED_TPS and r["price_per_hour"] == PER_HOUR
    # Keep the teacher busy for ~1.5 s (the meter polls every 0.1 s and wants 0.5 busy seconds).
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: ask(client, "teacher", "a b c"), range(16)))
    deadline = time.monotonic() + 10
    while True:
        raw = ask(client, "teacher", "a b c")
        r = row(gateway, raw.headers["x-request-id"])
        if r["price_source"] == "measured" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r["price_source"] == "measured" and r["price_per_hour"] == PER_HOUR
    tps = r["price_tokens_per_s"]
    # 4 streams of 16 tokens in ~0.32 s each: about 200 tokens/s while busy (loose: a loaded box).
    assert 20 < tps < 400, tps
    output_per_token = PER_HOUR / 3600 / tps
    assert r["cost"] == pytest.approx(output_per_token * (16 + 0.1 * r["prompt_tokens"]), rel=1e-6)
    # The counterfactual (the teacher is the priced tier here) is the same compute price.
    assert r["teacher_cost"] == pytest.approx(r["cost"], rel=1e-6)
