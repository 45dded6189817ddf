"""What support-bot backends send (issue #14), with the official ``openai`` SDK against real vLLM
CPU tiers behind the gateway: tool calls (named, required, auto, streamed, multi-turn with tool
results), structured output (``beta...parse`` with a pydantic model, strict ``json_schema``,
``json_object``), capability routing, conversation-aware routing with the shipped competence
index, ``/v1/embeddings`` from a vLLM pooling model, and a per_hour price from vLLM's own
``/metrics``.

The teacher of the session's gateway is started with tool calling (``supports.tools``); the
135M model writes well-formed calls because vLLM pins the arguments to each tool's schema
(``--tool-strict-level parameter``).
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from pydantic import BaseModel

from support.ledger import ledger_row
from support.processes import start_gateway

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", "function": {
    "name": "get_balance", "description": "Get the balance of a bank account",
    "parameters": {"type": "object", "properties": {"account": {"type": "string", "maxLength": 12}},
                   "required": ["account"], "additionalProperties": False}}}]
ASK_BALANCE = [{"role": "user", "content": "What's the balance of account 42?"}]


class Ticket(BaseModel):
    intent: str
    urgent: bool


@pytest.fixture(scope="module")
def client(vllm_gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def _check_call(call) -> dict:
    assert call.type == "function" and call.function.name == "get_balance" and call.id
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"account"} and isinstance(arguments["account"], str)
    return arguments


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_balance"}}])
def test_forced_tool_calls_are_well_formed(client, tool_choice):
    raw = client.chat.completions.with_raw_response.create(
        model="teacher", messages=ASK_BALANCE, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=False,
        max_tokens=60, temperature=0)
    reply = raw.parse()
    assert raw.headers["x-tierwise-tier"] == "teacher"
    calls = reply.choices[0].message.tool_calls
    assert calls and len(calls) == 1
    _check_call(calls[0])


def test_auto_tool_choice_routes_to_the_tool_tier_and_answers(client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK_BALANCE, tools=TOOLS,
                                                            tool_choice="auto", max_tokens=30, temperature=0)
    message = raw.parse().choices[0].message
    assert raw.headers["x-tierwise-tier"] == "teacher"
    assert message.content or message.tool_calls


def test_streamed_tool_call_deltas_reassemble_to_the_same_call(client):
    kwargs = dict(model="teacher", messages=ASK_BALANCE, tools=TOOLS, tool_choice="required", max_tokens=60,
                  temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    name, arguments, deltas = None, "", 0
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            deltas += 1
            assert delta.index == 0
            name = name or (delta.function.name if delta.function else None)
            arguments += (delta.function.arguments or "") if delta.function else ""
    assert deltas >= 2, "arguments arrive as deltas, not one buffered event"
    assert name == "get_balance"
    assert json.loads(arguments) == json.loads(whole.function.arguments)


def test_tool_results_in_a_multi_turn_history(client):
    call = client.chat.completions.create(model="teacher", messages=ASK_BALANCE, tools=TOOLS, tool_choice="required",
                                          max_tokens=60, temperature=0).choices[0].message.tool_calls[0]
    history = [*ASK_BALANCE,
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"balance": "12.50 EUR"}'}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=history, tools=TOOLS,
                                                            max_tokens=30, temperature=0)
    assert raw.headers["x-tierwise-tier"] == "teacher"  # a tool history needs a tool-aware template
    assert raw.parse().choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="`student` does not support tools"):
        client.chat.completions.create(model="student", messages=history, max_tokens=8)


def test_parse_with_a_pydantic_model_validates(client):
    completion = client.beta.chat.completions.parse(
        model="teacher", messages=[{"role": "user", "content": "I lost my card, please block it now!"}],
        response_format=Ticket, max_tokens=60, temperature=0)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Ticket) and parsed.intent


def test_strict_json_schema_and_json_object(client):
    schema = {"type": "object", "properties": {"category": {"type": "string", "enum": ["card", "transfer", "other"]}},
              "required": ["category"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="student", messages=[{"role": "user", "content": "My transfer has not arrived."}], max_tokens=30,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "c", "strict": True,
                                                                                "schema": schema}})
    assert json.loads(reply.choices[0].message.content)["category"] in ("card", "transfer", "other")
    reply = client.chat.completions.create(
        model="teacher", messages=[{"role": "user", "content": "Give a JSON object with a key name."}],
        max_tokens=40, temperature=0, response_format={"type": "json_object"})
    content = reply.choices[0].message.content.lstrip()
    assert content.startswith("{")  # the grammar holds even when the 135M model rambles to max_tokens
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


def test_image_parts_are_refused_naming_the_tier(client):
    content = [{"type": "text", "text": "What is on this receipt?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": content}], max_tokens=8)
    assert err.value.body["code"] == "unsupported_by_tier" and "`teacher`" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": content}], max_tokens=8)
    assert err.value.body["code"] == "unsupported_by_tiers"


# -- embeddings from a vLLM pooling model, and a per_hour price from vLLM's /metrics ---------------

@pytest.fixture(scope="module")
def embedding_gateway(vllm_gateway, model_dirs, tmp_path_factory):
    """A second gateway: a vLLM pooling tier made from the packaged model (``supports.embeddings``),
    and the session's student vLLM reached by URL, priced by the hour from its own /metrics."""
    tmp = tmp_path_factory.mktemp("embeddings")
    student = vllm_gateway.config["model_list"][1]["vllm"]
    base = f"http://127.0.0.1:{student['port']}"
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    config = {
        "model_list": [
            {"model_name": "student-by-hour", "role": "teacher", "price": {"per_hour": 0.20, "assumed_tokens_per_s": 1.0},
             "url": {"base_url": base + "/v1", "upstream_model": "student", "metrics_url": base + "/metrics"}},
            {"model_name": "embed", "price": {"input_per_million": 0.01, "output_per_million": 0.0},
             "supports": {"embeddings": True, "chat": False},
             "vllm": {"model": str(model_dirs["teacher"]), "max_model_len": 512}},
        ],
        "router": {"policy": "fixed", "default_tier": "student-by-hour", "strong_tier": "student-by-hour"},
        "ledger": {"url": ledger},
        "auth": {"enabled": False},
        "server": {"throughput_poll_s": 0.5},
    }
    gw = start_gateway(config, tmp, timeout_s=600)
    gw.ledger = ledger
    yield gw
    gw.stop()


def test_embeddings_from_a_vllm_pooling_tier(embedding_gateway):
    client = openai.OpenAI(base_url=embedding_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    raw = client.embeddings.with_raw_response.create(model="embed", input=["I lost my card", "my card was stolen",
                                                                            "what's the weather"])
    reply = raw.parse()
    vectors = [d.embedding for d in reply.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576  # the model's hidden size
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731 - vLLM normalises the vectors
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    httpx.get(embedding_gateway.url + "/v1/costs/summary")
    row = ledger_row(embedding_gateway.ledger, raw.headers["x-request-id"])
    assert (row["endpoint"], row["tier"], row["status"]) == ("embeddings", "embed", "ok")
    assert row["prompt_tokens"] == reply.usage.prompt_tokens > 0
    assert row["cost"] == pytest.approx(reply.usage.prompt_tokens * 0.01 / 1e6)


def test_per_hour_price_from_vllm_metrics(embedding_gateway):
    client = openai.OpenAI(base_url=embedding_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    import concurrent.futures as cf

    ask = lambda _: client.chat.completions.with_raw_response.create(  # noqa: E731
        model="student-by-hour", messages=[{"role": "user", "content": "Tell me about cards."}], max_tokens=48,
        temperature=0, extra_body={"ignore_eos": True})
    deadline = time.monotonic() + 120
    while True:
        with cf.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, range(8)))
        httpx.get(embedding_gateway.url + "/v1/costs/summary")
        row = ledger_row(embedding_gateway.ledger, replies[-1].headers["x-request-id"])
        if row["price_source"] == "measured" or time.monotonic() > deadline:
            break
    assert row["price_source"] == "measured", row
    tps = row["price_tokens_per_s"]
    assert 5 < tps < 2000, tps  # a 4-layer model on 2 cores, 4 streams
    usage = replies[-1].parse().usage
    per_token = 0.20 / 3600 / tps
    assert row["cost"] == pytest.approx(per_token * (usage.completion_tokens + 0.1 * usage.prompt_tokens), rel=1e-6)
