"""The cascade (gateway/routing/cascade.py) over real HTTP: stub tiers whose logprobs the test sets.

The student stub is confident (logprob -0.05 per token) unless the request carries a
``[logprob=-4]`` tag; the confidence model is a real ``CascadeConfidence`` fitted on logprob
features, so the decision runs the serving code path end to end.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import httpx
import pytest

from gateway.config import TierConfig
from gateway.routing.cascade import Cascade, plan_cascade
from gateway.routing.policy import RouteDecision
from gateway.tiers.openai_http import OpenAIHTTPTier
from support.configs import STUDENT, TEACHER, stub_config
from support.confidence import fitted_confidence
from support.ledger import ledger_rows
from support.processes import REPO, ServerProcess, free_port, start_gateway, start_stub

DECISION_TOKENS = 4
ANSWER_TOKENS = 12
UNSURE = "[logprob=-4]"


def start_logprob_stub(tmp: Path, word: str) -> ServerProcess:
    return start_stub(tmp, tokens=ANSWER_TOKENS, word=word)  # logprob -0.05 per token by default


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cascade-stubs")
    started = []
    try:
        for word in ("teacher", "student"):
            started.append(start_logprob_stub(tmp, word))
        yield tuple(started)
    finally:
        for stub in started:
            stub.stop()


@pytest.fixture(scope="module")
def confidence_path(tmp_path_factory) -> Path:
    """A real confidence model: answers whose tokens are near-certain agree, unsure ones do not."""
    return fitted_confidence(tmp_path_factory.mktemp("cascade") / "confidence.skops", DECISION_TOKENS)


def sse_texts(body: str) -> tuple[str, list[dict]]:
    chunks = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    text = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks


# -- the component, with real tiers over HTTP ---------------------------------------------------------
def _tier(name: str, url: str, session: aiohttp.ClientSession) -> OpenAIHTTPTier:
    price = STUDENT if name == "student" else TEACHER
    return OpenAIHTTPTier(TierConfig(model_name=name, price=price, url={"base_url": url + "/v1"}), session)


def test_cascade_tier_accepts_or_escalates_and_counts_the_rejected_attempt(stubs, confidence_path):
    from router.confidence import load_confidence

    loaded = load_confidence(confidence_path)
    cascade = Cascade(loaded.model, loaded.threshold, DECISION_TOKENS)

    async def run() -> list:
        async with aiohttp.ClientSession() as session:
            teacher, student = _tier("teacher", stubs[0].url, session), _tier("student", stubs[1].url, session)
            for tier in (teacher, student):
                assert await tier.probe()
            decision = RouteDecision("student", policy="cascade", cascade=cascade)
            results = []
            for text in ("my card is lost", f"my card is lost {UNSURE}"):
                body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
                plan = plan_cascade(decision, body, [student, teacher], teacher)
                reply = await plan[0].complete("chat", body)
                results.append((plan[0].outcome, reply.data))
            # n > 1 and a fallback decision are not cascaded
            assert plan_cascade(decision, {"n": 2}, [student, teacher], teacher)[0] is student
            assert plan_cascade(RouteDecision("student", policy="trained+fallback"), {}, [student], teacher)[0] is student
            return results

    (accepted, reply_a), (escalated, reply_e) = asyncio.run(run())
    assert not accepted.escalated and accepted.confidence >= 0.5 and accepted.final_tier == "student"
    assert reply_a["choices"][0]["message"]["content"].startswith("student")
    assert "logprobs" not in reply_a["choices"][0]  # the client did not ask
    assert reply_a["usage"]["completion_tokens"] == ANSWER_TOKENS
    assert escalated.escalated and escalated.reason == "unsure" and escalated.confidence < 0.5
    assert reply_e["choices"][0]["message"]["content"].startswith("teacher")
    assert escalated.extra_completion_tokens == DECISION_TOKENS  # only the window was generated for nothing
    assert escalated.extra_prompt_tokens > 0


# -- the gateway: real uvicorn, SQLite ledger, /metrics ------------------------------------------------
def cascade_config(stubs, db, confidence_path) -> dict:
    teacher, student = stubs
    config = stub_config(teacher.url, f"sqlite:///{db}", student.url)
    config["router"] = {"policy": "cascade", "strong_tier": "teacher", "weak_tier": "student",
                        "cascade": {"artifact": str(confidence_path), "decision_tokens": DECISION_TOKENS}}
    return config


def test_gateway_cascade_streams_and_books_both_calls(stubs, confidence_path, tmp_path):
    db = tmp_path / "ledger.db"
    gateway = start_gateway(cascade_config(stubs, db, confidence_path), tmp_path, timeout_s=120)
    url = gateway.url + "/v1/chat/completions"
    try:
        assert httpx.get(gateway.url + "/health").json()["routing_policy"] == "cascade"
        answers = []
        for stream in (False, True):
            for text in ("where is my card", f"where is my card {UNSURE}"):
                body = {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}
                resp = httpx.post(url, json=body, timeout=60)
                assert resp.status_code == 200, resp.text
                if stream:
                    content, chunks = sse_texts(resp.text)
                    assert resp.text.count("data: [DONE]") == 1
                    assert all("logprobs" not in c["choices"][0] or c["choices"][0]["logprobs"] is None
                               for c in chunks if c.get("choices"))
                else:
                    choice = resp.json()["choices"][0]
                    content = choice["message"]["content"]
                    assert "logprobs" not in choice or choice["logprobs"] is None
                answers.append((content.split()[0], len(content.split()), resp.headers["x-tierwise-tier"]))
        # a client that asks for logprobs keeps them, cut to its top_logprobs
        resp = httpx.post(url, json={"model": "auto", "logprobs": True, "top_logprobs": 1,
                                     "messages": [{"role": "user", "content": "card"}]}, timeout=60)
        entries = resp.json()["choices"][0]["logprobs"]["content"]
        assert len(entries) == ANSWER_TOKENS and all(len(e["top_logprobs"]) == 1 for e in entries)
        metrics = httpx.get(gateway.url + "/metrics").text
    finally:
        gateway.stop()
    assert answers == [("student", ANSWER_TOKENS, "student"), ("teacher", ANSWER_TOKENS, "teacher")] * 2
    assert "tierwise_cascade_escalations_total 2.0" in metrics
    assert "tierwise_cascade_accepted_total 3.0" in metrics
    rows = ledger_rows(db)
    assert [(r["tier"], r["escalated"], r["stream"]) for r in rows] == [
        ("student", False, False), ("teacher", True, False), ("student", False, True), ("teacher", True, True),
        ("student", False, False)]
    for row in rows:
        assert row["route_policy"] == "cascade"
        assert (row["cascade_confidence"] < 0.5) == bool(row["escalated"])
    for row in (rows[1], rows[3]):  # the teacher's answer plus the rejected student window
        assert row["extra_completion_tokens"] == DECISION_TOKENS and row["extra_prompt_tokens"] > 0
        extra = (row["extra_prompt_tokens"] * STUDENT["input_per_million"]
                 + DECISION_TOKENS * STUDENT["output_per_million"]) / 1e6
        teacher = (row["prompt_tokens"] * TEACHER["input_per_million"]
                   + row["completion_tokens"] * TEACHER["output_per_million"]) / 1e6
        assert row["extra_cost"] == pytest.approx(extra)
        assert row["cost"] == pytest.approx(teacher + extra)
    for row in (rows[0], rows[2]):
        assert row["extra_completion_tokens"] in (0, None) and (row["extra_cost"] or 0.0) == 0.0
        assert row["completion_tokens"] == ANSWER_TOKENS


def test_a_missing_confidence_model_stops_the_start_up(stubs, tmp_path):
    import yaml

    config = cascade_config(stubs, tmp_path / "ledger.db", tmp_path / "nowhere.skops")
    config.update(server={"port": free_port()}, state_dir=str(tmp_path / "state"))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "-c", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "cascade confidence model not found" in " ".join((run.stdout + run.stderr).split())
