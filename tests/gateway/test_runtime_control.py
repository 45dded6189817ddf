"""Promote without restart (issue #13 item 5): a candidate tier registered while two gateway
replicas run (real uvicorn processes on one SQLite ledger, stub upstreams), given a canary
share of one workload behind the shipped student's competence index, promoted, rolled back
and retired: both replicas follow through the database, no restart."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml

from support.configs import stub_config
from support.ledger import ledger_row
from support.processes import REPO, start_gateway, start_stub, wait_until

HEADER = "x-tierwise-workload"
COMPETENCE = REPO / "artifacts" / "tiers" / "student" / "competence.skops"
IN_SCOPE = "I still haven't received my new card, when will it arrive?"
OUT_OF_SCOPE = "What's the weather in Paris tomorrow?"


def ask(gw, text: str, workload: str | None = "support") -> httpx.Response:
    headers = {HEADER: workload} if workload else {}
    return httpx.post(gw.url + "/v1/chat/completions", timeout=30, headers=headers,
                      json={"model": "auto", "messages": [{"role": "user", "content": text}]})


def applied(gw) -> int:
    return httpx.get(gw.url + "/v1/admin/runtime", timeout=30).json()["applied_version"]


@pytest.fixture
def replicas(stub, tmp_path):
    candidate = start_stub(tmp_path, word="candidate")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = stub_config(stub.url, db, server={"runtime_poll_s": 0.3})
    gateways = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        gateways.append(start_gateway(config, tmp_path / f"r{i}", timeout_s=60))
    yield gateways, candidate, db
    for gw in gateways:
        gw.stop()
    candidate.stop()


def test_register_canary_promote_rollback_retire_reach_every_replica(replicas, tmp_path):
    (a, b), candidate, db = replicas
    assert ask(a, IN_SCOPE).headers["x-tierwise-tier"] == "student"  # the configured chain (fixed: student)

    # Registered from another process (the CLI writes the database); both replicas start the tier.
    tier_file = tmp_path / "candidate.yaml"
    tier_file.write_text(yaml.safe_dump({"model_name": "student-v2", "role": "student",
                                         "url": {"base_url": candidate.url + "/v1"},
                                         "price": {"input_per_million": 0.01, "output_per_million": 0.1}}))
    cli = subprocess.run([sys.executable, "-m", "gateway", "runtime", "register", str(tier_file), "--ledger-url", db],
                         cwd=REPO, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    for gw in (a, b):
        wait_until(lambda gw=gw: "student-v2" in [m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=30).json()["data"]],
                   20, "the registered tier on every replica")

    # Canary (through the admin API of replica A) with the shipped competence index.
    resp = httpx.post(a.url + "/v1/admin/workloads/support/canary", timeout=60,
                      json={"tier": "student-v2", "share": 1.0, "competence_artifact": str(COMPETENCE)})
    assert resp.status_code == 200 and resp.json()["applied"], resp.text
    version = resp.json()["version"]
    wait_until(lambda: applied(b) >= version, 180, "replica B applies the canary (its first scikit-learn import)")
    for gw in (a, b):
        canary = ask(gw, IN_SCOPE)
        assert canary.status_code == 200 and canary.headers["x-tierwise-tier"] == "student-v2"
        assert "candidate" in canary.json()["choices"][0]["message"]["content"]
        assert ask(gw, OUT_OF_SCOPE).headers["x-tierwise-tier"] == "teacher"  # beyond the student's competence
        assert ask(gw, IN_SCOPE, workload="other").headers["x-tierwise-tier"] == "student"  # other workloads: untouched

    assert httpx.post(b.url + "/v1/admin/workloads/support/promote", timeout=30).status_code == 200
    wait_until(lambda: applied(a) >= applied(b), 30, "replica A applies the promotion")
    shown = httpx.get(a.url + "/v1/admin/runtime", timeout=30).json()["workloads"]["support"]
    assert shown["tier"] == "student-v2" and shown["canary_tier"] is None and shown["previous_tier"] is None

    assert httpx.post(a.url + "/v1/admin/workloads/support/rollback", timeout=30).status_code == 200
    wait_until(lambda: applied(b) >= applied(a), 30, "replica B applies the rollback")
    assert ask(b, IN_SCOPE).headers["x-tierwise-tier"] == "student"
    conflict = httpx.post(a.url + "/v1/admin/workloads/nobody/promote", timeout=30)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"

    assert httpx.delete(a.url + "/v1/admin/tiers/student-v2", timeout=30).status_code == 200
    wait_until(lambda: applied(b) >= applied(a), 30, "replica B retires the tier")
    gone = httpx.post(b.url + "/v1/chat/completions", timeout=30,
                      json={"model": "student-v2", "messages": [{"role": "user", "content": "x"}]})
    assert gone.status_code == 404


def test_bad_registrations_get_4xx(replicas):
    (a, _), _, _ = replicas
    bad = httpx.post(a.url + "/v1/admin/tiers", timeout=30, json={"model_name": "x"})  # no backend, no price
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    clash = httpx.post(a.url + "/v1/admin/tiers", timeout=30, json={
        "model_name": "teacher", "url": {"base_url": "http://127.0.0.1:9/v1"},
        "price": {"input_per_million": 1, "output_per_million": 1}})
    assert clash.status_code == 400 and clash.json()["error"]["code"] == "tier_exists"
    unknown = httpx.post(a.url + "/v1/admin/workloads/support/canary", timeout=30, json={"tier": "nope", "share": 0.5})
    assert unknown.status_code == 404
    share = httpx.post(a.url + "/v1/admin/workloads/support/canary", timeout=30, json={"tier": "student", "share": 2})
    assert share.status_code == 400


def test_router_and_threshold_changes_reach_every_replica(replicas):
    """Issue #13: replicas pick up router and threshold changes from the database (no restart)."""
    (a, b), _, db = replicas
    router = REPO / "artifacts" / "router" / "mmlu_router.skops"
    resp = httpx.put(a.url + "/v1/admin/router", timeout=300, json={"artifact": str(router), "threshold": 0.0})
    assert resp.status_code == 200 and resp.json()["applied"], resp.text
    wait_until(lambda: applied(b) >= resp.json()["version"], 180, "replica B loads the router")
    for gw in (a, b):  # every score is >= 0: the strong tier
        assert ask(gw, IN_SCOPE, workload=None).headers["x-tierwise-tier"] == "teacher"
        assert httpx.get(gw.url + "/health", timeout=30).json()["routing_policy"] == "trained"
    cli = subprocess.run([sys.executable, "-m", "gateway", "runtime", "router", "--artifact", str(router),
                          "--threshold", "1.0", "--ledger-url", db], cwd=REPO, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    for gw in (a, b):
        wait_until(lambda gw=gw: ask(gw, IN_SCOPE, workload=None).headers["x-tierwise-tier"] == "student", 60,
                   "threshold 1.0 (nothing scores above it) on every replica")
    missing = httpx.put(a.url + "/v1/admin/router", timeout=30, json={"artifact": "/nope.skops"})
    assert missing.status_code == 404


def test_a_workload_with_its_own_teacher_is_served_by_it_until_a_student_is_promoted(stub, tmp_path):
    """Without a promoted student, a workload named in shadow.workload_reference_tiers goes to its
    teacher, not to the default chain's student (made for another workload); promotion takes over."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = stub_config(stub.url, db, server={"runtime_poll_s": 0.3},
                         shadow={"workload_reference_tiers": {"exam": "teacher"}})
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        exam = ask(gw, IN_SCOPE, workload="exam")
        assert exam.headers["x-tierwise-tier"] == "teacher"
        assert ask(gw, IN_SCOPE, workload="support").headers["x-tierwise-tier"] == "student"
        httpx.get(gw.url + "/v1/costs/summary", timeout=30)
        assert ledger_row(db, exam.headers["x-request-id"])["route_policy"] == "workload+teacher"
        resp = httpx.post(gw.url + "/v1/admin/workloads/exam/canary", timeout=60, json={"tier": "student", "share": 1.0})
        assert resp.status_code == 200, resp.text
        assert httpx.post(gw.url + "/v1/admin/workloads/exam/promote", timeout=30).status_code == 200
        wait_until(lambda: ask(gw, IN_SCOPE, workload="exam").headers["x-tierwise-tier"] == "student", 30,
                   "the promoted student serves the workload")
    finally:
        gw.stop()


def test_a_canary_behind_its_cascade_moves_with_its_student(stub, tmp_path):
    """The flywheel's promotion path for a student that misses the gate alone: the canary (and,
    once promoted, the workload's tier) answers through its own cascade, escalating to the
    workload's teacher when unsure; a rollback restores the previous tier without that cascade."""
    from support.confidence import fitted_confidence

    candidate = start_stub(tmp_path, word="candidate")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = stub_config(stub.url, db, server={"runtime_poll_s": 0.3})
    gw = start_gateway(config, tmp_path, timeout_s=60)
    confidence = fitted_confidence(tmp_path / "cascade.skops", 16)
    sure, unsure = "my card has not arrived", "my card has not arrived [logprob=-4]"
    try:
        tier = {"model_name": "student-v2", "role": "student", "url": {"base_url": candidate.url + "/v1"},
                "price": {"input_per_million": 0.01, "output_per_million": 0.1}}
        assert httpx.post(gw.url + "/v1/admin/tiers", timeout=60, json=tier).status_code == 200
        missing = httpx.post(gw.url + "/v1/admin/workloads/support/canary", timeout=30,
                             json={"tier": "student-v2", "share": 1.0, "cascade_artifact": "/nope.skops"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "artifact_not_found"
        resp = httpx.post(gw.url + "/v1/admin/workloads/support/canary", timeout=120,
                          json={"tier": "student-v2", "share": 1.0, "cascade_artifact": str(confidence)})
        assert resp.status_code == 200 and resp.json()["applied"], resp.text

        kept, escalated = ask(gw, sure), ask(gw, unsure)
        assert kept.headers["x-tierwise-tier"] == "student-v2"
        assert "candidate" in kept.json()["choices"][0]["message"]["content"]
        assert escalated.status_code == 200 and escalated.headers["x-tierwise-tier"] == "teacher"
        httpx.get(gw.url + "/v1/costs/summary", timeout=30)  # the ledger has flushed
        row = ledger_row(db, escalated.headers["x-request-id"])
        assert row["route_policy"] == "workload+canary+cascade" and row["escalated"]
        assert row["extra_completion_tokens"] > 0  # the rejected candidate attempt is booked
        assert not ledger_row(db, kept.headers["x-request-id"])["escalated"]

        assert httpx.post(gw.url + "/v1/admin/workloads/support/promote", timeout=60).status_code == 200
        shown = httpx.get(gw.url + "/v1/admin/runtime", timeout=30).json()["workloads"]["support"]
        assert shown["tier"] == "student-v2" and shown["cascade_artifact"] == str(confidence)
        assert shown["canary_cascade_artifact"] is None
        promoted = ask(gw, unsure)
        assert promoted.headers["x-tierwise-tier"] == "teacher"
        httpx.get(gw.url + "/v1/costs/summary", timeout=30)
        assert ledger_row(db, promoted.headers["x-request-id"])["route_policy"] == "workload+cascade"

        assert httpx.post(gw.url + "/v1/admin/workloads/support/rollback", timeout=60).status_code == 200
        shown = httpx.get(gw.url + "/v1/admin/runtime", timeout=30).json()["workloads"]["support"]
        assert shown["tier"] is None and shown["cascade_artifact"] is None
        assert ask(gw, unsure).headers["x-tierwise-tier"] == "student"  # the configured chain, no cascade
    finally:
        gw.stop()
        candidate.stop()
