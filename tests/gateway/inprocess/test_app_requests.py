"""Request validation, error shapes and the model list, on the app in this process.

The tiers are real URL tiers on the session's stub upstream (one process for the whole run);
the gateway itself runs in-process (``support.inprocess``), so each test costs no start-up.
"""

from __future__ import annotations

import pytest

from support.configs import stub_config
from support.inprocess import running_app
from support.ledger import ledger_rows

ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
async def gateway(stub, tmp_path):
    db = tmp_path / "ledger.db"
    async with running_app(stub_config(stub.url, f"sqlite:///{db}", state_dir=str(tmp_path))) as (app, client):
        client.ledger = db  # type: ignore[attr-defined]
        yield client


def assert_openai_error(response, status: int, **fields: object) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    for name, value in fields.items():
        assert body["error"][name] == value, body
    return body["error"]


def names_param(error: dict, name: str) -> bool:
    """True if the error's ``param`` names ``name``. Pydantic's location parts still leak into it
    today ("query.since", "prompt.str"; OpenAI says "since", "prompt"): reported, not yet fixed."""
    return name in (error["param"] or "").split(".")


async def test_models_lists_auto_and_every_ready_tier_with_its_names(gateway):
    response = await gateway.get("/v1/models")
    assert response.status_code == 200
    cards = {card["id"]: card for card in response.json()["data"]}
    assert set(cards) == {"auto", "teacher", "student"}
    assert cards["auto"]["tierwise"]["routes_to"] == ["teacher", "student"]
    assert cards["student"]["tierwise"] == {
        "tier": "student", "role": "student", "max_model_len": 2048,
        "supports": {"tools": False, "structured_output": True, "modalities": ["text"], "embeddings": False,
                     "chat": True}}


async def test_a_served_request_is_answered_and_booked(gateway):
    response = await gateway.post("/v1/chat/completions", json={
        "model": "student", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    await gateway.get("/v1/costs/summary")  # flushes the ledger
    [row] = ledger_rows(gateway.ledger)
    assert (row["request_id"], row["tier"], row["status"]) == (response.headers["x-request-id"], "student", "ok")


async def test_an_unknown_model_is_a_404_naming_it(gateway):
    response = await gateway.post("/v1/chat/completions", json={
        "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    error = assert_openai_error(response, 404, code="model_not_found")
    assert "no-such-model" in error["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "student"}, "messages"),
    ({"model": "student", "messages": "hi"}, "messages"),
    ({"model": "student", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
    ({"model": "student", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
])
async def test_an_invalid_chat_body_is_a_400_naming_the_parameter(gateway, body, param):
    response = await gateway.post("/v1/chat/completions", json=body)
    error = assert_openai_error(response, 400, type="invalid_request_error")
    assert names_param(error, param), error


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"text"', b""])
async def test_a_body_that_is_not_a_json_object_is_a_400(gateway, content):
    response = await gateway.post("/v1/chat/completions", content=content,
                                  headers={"content-type": "application/json"})
    assert_openai_error(response, 400, type="invalid_request_error")


async def test_an_invalid_completions_body_is_a_400(gateway):
    response = await gateway.post("/v1/completions", json={"model": "student", "prompt": 5})
    error = assert_openai_error(response, 400, code="invalid_value")
    assert names_param(error, "prompt"), error


@pytest.mark.parametrize(("query", "param"), [
    ("since=yesterday", "since"),
    ("until=2026-13-01", "until"),
    ("since=2026-02-02T00:00:00Z&until=2026-02-01T00:00:00Z", "since"),
    ("since=0001-01-01T00:00:00%2B05:00", "since"),
])
async def test_invalid_cost_bounds_are_a_400(gateway, query, param):
    response = await gateway.get(f"/v1/costs/summary?{query}")
    error = assert_openai_error(response, 400, code="invalid_value")
    assert names_param(error, param), error


async def test_an_unknown_time_series_bucket_is_a_400(gateway):
    response = await gateway.get("/v1/costs/timeseries?bucket=week")
    error = assert_openai_error(response, 400, code="invalid_value")
    assert names_param(error, "bucket"), error


async def test_an_unknown_path_is_an_openai_style_404(gateway):
    assert_openai_error(await gateway.get("/v1/nothing-here"), 404, type="not_found_error")


async def test_a_long_prompt_is_routed_off_the_event_loop(stub, tmp_path):
    """Issue #12: a decision on chat-sized text stays on the loop (cheaper than a thread hop); past
    OFFLOAD_ROUTING_CHARS it runs in a worker thread, so other clients' streams keep flowing."""
    import threading

    from gateway.entrypoints.engine.serving import OFFLOAD_ROUTING_CHARS

    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'ledger.db'}", state_dir=str(tmp_path))
    async with running_app(config) as (app, client):
        routing = app.state.tierwise.policy
        inner, threads = routing.default, []

        class Recording:
            name = inner.name

            def route(self, messages):
                threads.append(threading.get_ident())
                return inner.route(messages)

            def set_shift(self, shift):
                inner.set_shift(shift)

        routing.default = Recording()
        for text in ("short", "x " * OFFLOAD_ROUTING_CHARS):
            response = await client.post("/v1/chat/completions", json={
                "model": "auto", "max_tokens": 2, "messages": [{"role": "user", "content": text}]})
            assert response.status_code == 200, response.text
    assert threads[0] == threading.get_ident() != threads[1]  # the loop's thread, then a worker's


async def test_gc_thresholds_are_set_after_start_up_and_the_loop_lag_is_exported(stub, tmp_path):
    import gc

    previous = gc.get_threshold()
    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'ledger.db'}", state_dir=str(tmp_path))
    config["server"] = {**config.get("server", {}), "gc_thresholds": [12_345, 6, 7]}
    try:
        async with running_app(config) as (_, client):
            assert gc.get_threshold() == (12_345, 6, 7)
            metrics = (await client.get("/metrics")).text
            assert "tierwise_event_loop_lag_seconds_count" in metrics
            assert "tierwise_gc_pause_seconds_count" in metrics
    finally:
        gc.set_threshold(*previous)
