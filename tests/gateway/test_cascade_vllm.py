"""The cascade with real vLLM tiers: the shipped student and teacher, the shipped confidence model.

The gateway starts both vLLM CPU servers itself (``policy: cascade``). Support requests come
back as one ordinary answer (streamed or not) whichever tier gave it, and every row says what
the cascade decided, consistently with its confidence and threshold.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from distill.data import messages_for, parse_intent
from router.confidence import load_confidence
from support.models import STUDENT_PRICE, TEACHER_PRICE
from support.processes import REPO, model_cache, start_gateway

pytestmark = pytest.mark.slow

CONFIDENCE = REPO / "artifacts" / "router" / "cascade_confidence.skops"
PROMPTS = ["I still have not received my new card, when will it arrive?",
           "How do I top up by bank transfer?",
           "Why was I charged a fee for the cash withdrawal?",
           "Write a Python function that reverses a linked list."]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cascade-vllm")
    cache = model_cache()
    for name in ("student", "teacher"):
        if not (cache / name / "config.json").is_file():
            pytest.fail(f"no assembled {name} in {cache} (run `python -m distill assemble`)")
    tiers = [{"model_name": name, "role": name, "price": STUDENT_PRICE if name == "student" else TEACHER_PRICE,
              "vllm": {"model": str(cache / name), "max_model_len": 1024, "extra_args": ["--max-num-seqs", "8"]}}
             for name in ("teacher", "student")]
    config = {"model_list": tiers, "auth": {"enabled": False}, "ledger": {"url": f"sqlite:///{tmp}/ledger.db"},
              "router": {"policy": "cascade", "strong_tier": "teacher", "weak_tier": "student",
                         "cascade": {"artifact": str(CONFIDENCE)}}}
    server = start_gateway(config, tmp, timeout_s=1500)
    server.db = tmp / "ledger.db"
    try:
        yield server
    finally:
        server.stop()


def test_support_requests_through_the_cascade(gateway):
    threshold = load_confidence(CONFIDENCE).threshold
    seen = []
    for i, text in enumerate(PROMPTS):
        body = {"model": "auto", "messages": messages_for(text), "max_tokens": 32, "temperature": 0, "stream": i % 2 == 1}
        resp = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=300)
        assert resp.status_code == 200, resp.text
        if body["stream"]:
            chunks = [json.loads(x[5:]) for x in resp.text.splitlines() if x.startswith("data:") and "[DONE]" not in x]
            content = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c["choices"])
            assert all(not c["choices"] or not c["choices"][0].get("logprobs") for c in chunks)
        else:
            content = resp.json()["choices"][0]["message"]["content"]
            assert not resp.json()["choices"][0].get("logprobs")
        seen.append((resp.headers["x-tierwise-tier"], content))
    httpx.get(gateway.url + "/v1/costs/summary")  # flushes pending rows
    engine = sa.create_engine(f"sqlite:///{gateway.db}")
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM ledger_requests ORDER BY id"))]
    engine.dispose()
    assert len(rows) == len(PROMPTS)
    for (tier, content), row in zip(seen, rows):
        assert row["tier"] == tier and row["route_policy"] == "cascade" and row["status"] == "ok"
        assert row["escalated"] == (row["cascade_confidence"] < threshold)
        assert tier == ("teacher" if row["escalated"] else "student")
        assert (row["extra_completion_tokens"] or 0) > 0 if row["escalated"] else not row["extra_cost"]
        if tier == "student" or "Intent" in content:
            assert parse_intent(content), content
    assert any(not row["escalated"] for row in rows[:3]), "the student kept none of the support requests"
    metrics = httpx.get(gateway.url + "/metrics").text
    escalated = sum(bool(r["escalated"]) for r in rows)
    assert f"tierwise_cascade_escalations_total {float(escalated)}" in metrics


def test_the_offline_fit_reads_the_logprobs_vllm_serves(gateway):
    """``distill cascade`` fits the confidence model on HF-generated logprobs; the gateway feeds it
    vLLM's. Same student, same prompts: the answers and the feature rows must agree, or the
    flywheel's threshold would not mean at serving time what it meant on validation."""
    from distill.cascade_fit import TOP_LOGPROBS, answers_with_logprobs
    from distill.modeling import load_model, load_tokenizer
    from router.confidence import DECISION_TOKENS, logprob_features

    student = model_cache() / "student"
    records = [{"messages": [*messages_for(text), {"role": "assistant", "content": ""}]} for text in PROMPTS[:3]]
    offline = answers_with_logprobs(load_model(student, device="cpu"), load_tokenizer(student), records)
    for text, answer in zip(PROMPTS, offline):
        resp = httpx.post(gateway.url + "/v1/chat/completions", timeout=300, json={
            "model": "student", "messages": messages_for(text), "max_tokens": 32, "temperature": 0,
            "logprobs": True, "top_logprobs": TOP_LOGPROBS})
        assert resp.status_code == 200, resp.text
        choice = resp.json()["choices"][0]
        served = choice["logprobs"]["content"][:DECISION_TOKENS]
        assert choice["message"]["content"].strip().splitlines()[0] == answer.text.splitlines()[0]
        assert [t["token"] for t in served] == [t["token"] for t in answer.tokens]
        np.testing.assert_allclose(logprob_features(served), logprob_features(answer.tokens), atol=0.02)


def test_the_teacher_judges_the_student_through_the_gateway(gateway, tmp_path):
    """``distill evaluate --judge-url``: the teacher grades answers as an ordinary gateway client
    (booked under the ``judge`` workload); what it says is parsed as yes / no / unparsed."""
    import subprocess
    import sys

    from distill.judge import JUDGE_WORKLOAD, judge_answers

    reference = "Intent: card_arrival\nReply: I can help with card arrival."
    prompts = [messages_for(PROMPTS[0])] * 2
    result = judge_answers(prompts, [reference, "Intent: top_up_by_bank_transfer_charge\nReply: Sure."],
                           [reference, reference], base_url=gateway.url + "/v1", model="teacher")
    assert result["n"] == 2 and result["metric"] == "judge" and 0 <= result["unparsed"] <= 2
    assert result["quality"] == sum(result["scores"]) / 2
    httpx.get(gateway.url + "/v1/costs/summary")  # flushes pending rows
    engine = sa.create_engine(f"sqlite:///{gateway.db}")
    with engine.connect() as conn:
        rows = {r.request_id: r for r in conn.execute(sa.text("SELECT request_id, tier, workload FROM ledger_requests"))}
    engine.dispose()
    for request_id in result["request_ids"]:
        assert rows[request_id].tier == "teacher" and rows[request_id].workload == JUDGE_WORKLOAD

    # the evaluate command's gate reads the judge's share when one is given
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"messages": [*messages_for(PROMPTS[1]), {"role": "assistant", "content": reference}]}) + "\n")
    out = tmp_path / "evaluation.json"
    done = subprocess.run([sys.executable, "-m", "distill", "evaluate", "--model", str(model_cache() / "student"),
                           "--data", str(data), "--n", "1", "--judge-url", gateway.url + "/v1", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["metric"] == "judge" and report["judge"]["judge"] == "teacher"
    assert report["passes"] == (report["student_quality"] >= 0.97) and "structural" in report
