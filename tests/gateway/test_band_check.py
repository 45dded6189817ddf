"""The competence gate's uncertain band with its check, over real HTTP (uvicorn, SQLite ledger).

Requests just past the gate's threshold go to the support teacher, asked with logprobs; when
its first line is unsure, the general flagship answers instead (a cascade teacher -> flagship).
The stub tiers answer with their own names; a ``[logprob=-4]`` tag makes a stub unsure. The
index is the shipped student's, with its threshold lowered to 0.5 so that "Tell me a joke"
(distance 0.61) lies in the band, up to the index's 99.5 % validation edge (0.67).
"""

from __future__ import annotations

import json

import httpx
import pytest

from support.configs import STUDENT, TEACHER
from support.confidence import fitted_confidence
from support.ledger import ledger_rows
from support.processes import REPO, start_gateway, start_stub

INDEX = REPO / "artifacts" / "tiers" / "student" / "competence.skops"
DECISION_TOKENS = 4
UNSURE = "[logprob=-4]"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("band-stubs")
    started = {}
    try:
        for word in ("flagship", "teacher", "student"):
            started[word] = start_stub(tmp, tokens=8, word=word)
        yield started
    finally:
        for stub in started.values():
            stub.stop()


@pytest.fixture(scope="module")
def check_path(tmp_path_factory):
    """A real confidence model: near-certain first lines are kept, unsure ones are not."""
    return fitted_confidence(tmp_path_factory.mktemp("band") / "band_check.skops", DECISION_TOKENS, seed=1)


def band_config(stubs, db, check_path) -> dict:
    def tier(name: str, role: str, price: dict) -> dict:
        return {"model_name": name, "role": role, "price": price, "url": {"base_url": stubs[name].url + "/v1"}}

    return {"model_list": [tier("flagship", "teacher", TEACHER), tier("teacher", "teacher", TEACHER),
                           tier("student", "student", STUDENT)],
            "router": {"policy": "fixed", "default_tier": "student", "strong_tier": "teacher", "weak_tier": "student",
                       "competence": {"artifact": str(INDEX), "threshold": 0.5, "tier": "flagship",
                                      "near_tier": "teacher", "near_acceptance": 0.995,
                                      "near_check": {"artifact": str(check_path), "decision_tokens": DECISION_TOKENS}}},
            "ledger": {"url": f"sqlite:///{db}"}, "auth": {"enabled": False}}


def test_band_requests_ask_the_teacher_first_and_unsure_ones_reach_the_flagship(stubs, check_path, tmp_path):
    db = tmp_path / "ledger.db"
    gateway = start_gateway(band_config(stubs, db, check_path), tmp_path, timeout_s=120)
    url = gateway.url + "/v1/chat/completions"
    answered = []
    try:
        for text, stream in (("Tell me a joke", False), (f"Tell me a joke {UNSURE}", False),
                             (f"Tell me a joke {UNSURE}", True), ("What is the capital of France?", False),
                             ("I lost my card", False)):
            resp = httpx.post(url, json={"model": "auto", "stream": stream, "user": text,
                                         "messages": [{"role": "user", "content": text}]}, timeout=60)
            assert resp.status_code == 200, resp.text
            if stream:
                assert resp.text.count("data: [DONE]") == 1
                chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
                text = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c["choices"])
                answered.append(text.split()[0])
            else:
                answered.append(resp.json()["choices"][0]["message"]["content"].split()[0])
        metrics = httpx.get(gateway.url + "/metrics").text
    finally:
        gateway.stop()
    assert answered == ["teacher", "flagship", "flagship", "flagship", "student"]
    rows = ledger_rows(db)
    assert [(r["tier"], r["route_policy"], r["escalated"]) for r in rows] == [
        ("teacher", "competence_near+cascade", False), ("flagship", "competence_near+cascade", True),
        ("flagship", "competence_near+cascade", True), ("flagship", "competence", None), ("student", "fixed", None)]
    escalated = rows[1]
    assert escalated["extra_completion_tokens"] == DECISION_TOKENS and escalated["extra_cost"] > 0  # the teacher's try
    assert 'tierwise_competence_band_checks_total{outcome="kept"} 1.0' in metrics
    assert 'tierwise_competence_band_checks_total{outcome="escalated"} 2.0' in metrics
    assert "tierwise_cascade_escalations_total 0.0" in metrics  # the student's cascade is another count
