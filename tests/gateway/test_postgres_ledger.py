"""The ledger on the real PostgreSQL server: a second gateway in front of the same vLLM tiers
(reached by URL this time) books its requests in Postgres."""

from __future__ import annotations

import httpx
import openai
import pytest

from support.ledger import ledger_rows
from support.models import STUDENT_PRICE, TEACHER_PRICE
from support.processes import start_gateway

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_postgres_ledger_rows_and_summary(vllm_gateway, postgres_url, tmp_path):
    tiers = {t["model_name"]: t for t in vllm_gateway.config["model_list"]}
    config = {
        "model_list": [
            {"model_name": name, "role": t["role"], "price": t["price"],
             "url": {"base_url": f"http://127.0.0.1:{t['vllm']['port']}/v1", "max_model_len": 512}}
            for name, t in tiers.items()
        ],
        "router": {"policy": "fixed", "default_tier": "student"},
        "ledger": {"url": postgres_url},
        "auth": {"enabled": False},
    }
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        usages = {}
        for model in ("teacher", "auto"):
            raw = client.chat.completions.with_raw_response.create(
                model=model, max_tokens=6, temperature=0, messages=[{"role": "user", "content": "Hi!"}])
            usages[raw.headers["x-request-id"]] = (raw.headers["x-tierwise-tier"], raw.parse().usage)
        streamed = client.chat.completions.with_raw_response.create(
            model="student", max_tokens=6, stream=True, messages=[{"role": "user", "content": "Hi!"}])
        list(streamed.parse())
        summary = httpx.get(gw.url + "/v1/costs/summary").json()
    finally:
        gw.stop()

    rows = {r["request_id"]: r for r in ledger_rows(postgres_url)}
    assert set(rows) == set(usages) | {streamed.headers["x-request-id"]}
    prices = {"teacher": TEACHER_PRICE, "student": STUDENT_PRICE}
    expected_total = expected_teacher = 0.0
    for request_id, (tier, usage) in usages.items():
        row = rows[request_id]
        assert (row["tier"], row["prompt_tokens"], row["completion_tokens"]) == (
            tier, usage.prompt_tokens, usage.completion_tokens)
        cost = (usage.prompt_tokens * prices[tier]["input_per_million"]
                + usage.completion_tokens * prices[tier]["output_per_million"]) / 1e6
        teacher = (usage.prompt_tokens * TEACHER_PRICE["input_per_million"]
                   + usage.completion_tokens * TEACHER_PRICE["output_per_million"]) / 1e6
        assert row["cost"] == pytest.approx(cost) and row["teacher_cost"] == pytest.approx(teacher)
        expected_total += cost
        expected_teacher += teacher
    stream_row = rows[streamed.headers["x-request-id"]]
    assert stream_row["stream"] and stream_row["completion_tokens"] > 0 and stream_row["ts"].tzinfo is not None
    expected_total += stream_row["cost"]
    expected_teacher += stream_row["teacher_cost"]
    assert summary["requests"] == 3
    assert summary["total_cost"] == pytest.approx(expected_total)
    assert summary["teacher_counterfactual_cost"] == pytest.approx(expected_teacher)
    assert summary["savings"] == pytest.approx(expected_teacher - expected_total)
