"""The competence gate in a real gateway (uvicorn, real HTTP, SQLite ledger) in front of the
shipped router trained on our own tiers' outcomes (which reads the gate's distance), with stub
upstreams that say which tier answered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from support.artifacts import edited_copy
from support.configs import stub_config
from support.ledger import ledger_rows
from support.processes import REPO, ServerProcess, free_port, start_gateway, start_stub

SHIPPED_INDEX = REPO / "artifacts" / "tiers" / "student" / "competence.skops"
SUPPORT = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."


def start_tier_stub(tmp: Path, word: str) -> ServerProcess:
    return start_stub(tmp, tokens=3, word=word)


@pytest.fixture(scope="module")
def tiers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("competence-stubs")
    started = []
    try:
        for word in ("teacher", "student"):  # each answers with its tier's name
            started.append(start_tier_stub(tmp, word))
        yield tuple(started)
    finally:
        for stub in started:
            stub.stop()


def gated_config(tiers, db, index_path) -> dict:
    teacher, student = tiers
    config = stub_config(teacher.url, f"sqlite:///{db}", student.url)
    config["router"] = {"policy": "outcome", "strong_tier": "teacher", "weak_tier": "student",
                        "competence": {"artifact": str(index_path)}}
    return config


def ask(url: str, messages: list[dict]) -> str:
    resp = httpx.post(url + "/v1/chat/completions", json={"model": "auto", "messages": messages}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


def test_out_of_scope_goes_to_the_teacher_and_the_ledger_says_which_stage_decided(tiers, tmp_path):
    db = tmp_path / "ledger.db"
    gateway = start_gateway(gated_config(tiers, db, SHIPPED_INDEX), tmp_path, timeout_s=60)
    try:
        assert httpx.get(gateway.url + "/health").json()["routing_policy"] == "competence+outcome"
        assert ask(gateway.url, [{"role": "user", "content": "What's the weather in Paris tomorrow?"}]).startswith("teacher")
        assert ask(gateway.url, [{"role": "user", "content": "I still haven't received my new card"}]).startswith("student")
        # the support task's own system prompt is known to the student: still in scope
        assert ask(gateway.url, [{"role": "system", "content": SUPPORT},
                                 {"role": "user", "content": "I still haven't received my new card"}]).startswith("student")
        assert ask(gateway.url, [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
                   ).startswith("teacher")
    finally:
        gateway.stop()
    rows = ledger_rows(db)
    assert [(r["tier"], r["route_policy"]) for r in rows] == [
        ("teacher", "competence"), ("student", "outcome"), ("student", "outcome"), ("teacher", "competence")]
    weather = rows[0]
    assert weather["route_score"] > weather["route_threshold"]  # the distance and the gate's threshold


def test_an_edited_index_stops_the_start_up(tiers, tmp_path):
    edited = edited_copy(SHIPPED_INDEX, tmp_path / "competence.skops", lambda schema: schema + b" ")
    config = gated_config(tiers, tmp_path / "ledger.db", edited)
    config.update(server={"port": free_port()}, state_dir=str(tmp_path / "state"))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "-c", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "contents changed after it was written" in " ".join((run.stdout + run.stderr).split())  # log wraps lines


def test_a_missing_index_degrades_loudly(tiers, tmp_path):
    missing = tmp_path / "nowhere" / "competence.skops"
    gateway = start_gateway(gated_config(tiers, tmp_path / "ledger.db", missing), tmp_path, timeout_s=60)
    try:
        # no index: no gate, and no distance for the outcome router either, so every request goes to the teacher
        assert httpx.get(gateway.url + "/health").json()["routing_policy"] == "fixed"
        assert "competence gate: no index" in gateway.log_text()
        assert "the outcome router needs the competence index" in " ".join(gateway.log_text().split())
    finally:
        gateway.stop()
