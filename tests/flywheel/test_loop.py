"""One turn of the flywheel end to end (issue #13), with no manual step and no restart: a
gateway whose teacher (a stub) serves a workload and captures it, `python -m flywheel run`
(dataset -> a real 2-layer student distilled on the CPU -> evaluation -> registered as a vLLM
tier the running gateway starts -> canary compared with the teacher on shadow pairs ->
promoted), then the workload's in-scope traffic on the new student.

The stub teacher's answers are not a task a student can learn: this checks the loop's
plumbing and decisions, not quality (benchmarks/flywheel.py measures that). The gates are
opened (min fraction 0, agreement 0) for the same reason; a closed gate's path is checked
too (the offline gate rejects, nothing is registered)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import httpx
import pytest

from gateway.control.store import ControlStore
from gateway.ledger.schema import make_engine
from support.configs import stub_config
from support.ledger import ledger_rows
from support.processes import REPO, start_gateway, wait_until
from support.shared_data import shared_data

HEADER = "x-tierwise-workload"
SYSTEM = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."


def _messages(n: int, offset: int = 0) -> list[str]:
    with open(shared_data("banking77", "train.csv"), newline="", encoding="utf-8") as f:
        return [r["text"] for r in csv.DictReader(f)][offset::97][:n]


def _ask(gw, text: str, model: str = "auto") -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=120, headers={HEADER: "support"},
                      json={"model": model, "max_tokens": 16,
                            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]})


def _flywheel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flywheel", "run", "--workload", "support", "--student-layers", "2",
                           "--max-steps", "4", "--batch-size", "8", "--eval-n", "4", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_one_turn_from_captured_traffic_to_a_promoted_student(stub, tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = stub_config(stub.url, db, capture={"enabled": True, "workloads": ["support"]},
                         shadow={"sample_rate": 1.0, "reference_tier": "teacher"},
                         server={"runtime_poll_s": 0.5})
    config["router"] = {"policy": "fixed", "default_tier": "teacher", "strong_tier": "teacher", "weak_tier": "student"}
    gw = start_gateway(config, tmp_path, timeout_s=60)
    try:
        for text in _messages(60):  # cold start: only the teacher serves the workload
            assert _ask(gw, text).headers["x-tierwise-tier"] == "teacher"
        wait_until(lambda: len(ledger_rows(db, "captures")) == 60, 30, "captured pairs")

        # A closed offline gate: nothing reaches the gateway.
        # (the cascade is tried too, and cannot keep all of the test split unless the student is perfect)
        rejected = _flywheel("--out", str(tmp_path / "rejected"), "--ledger-url", db, "--min-fraction", "1.0",
                             "--cascade-min-share", "1.0")
        report = json.loads((tmp_path / "rejected" / "report.json").read_text())
        if report["stages"]["evaluate"]["student_quality"] < 1.0:
            assert rejected.returncode == 0 and report["outcome"] == "rejected_offline", rejected.stderr[-2000:]
            assert not report["stages"]["cascade"]["passes"] and report["stages"]["cascade"]["why"]
            assert not ControlStore(make_engine(db)).snapshot().tiers

        # The open gates: registered, canary, promoted, with traffic flowing meanwhile.
        import threading

        stop = threading.Event()

        def traffic() -> None:
            texts = _messages(200, offset=5)
            while not stop.is_set():
                for text in texts:
                    if stop.is_set():
                        return
                    try:
                        _ask(gw, text)
                    except httpx.HTTPError:
                        pass

        runner = threading.Thread(target=traffic, daemon=True)
        runner.start()
        try:
            done = _flywheel("--out", str(tmp_path / "turn"), "--ledger-url", db, "--min-fraction", "0",
                             "--canary-share", "1.0", "--canary-pairs", "3", "--canary-agreement", "0",
                             "--canary-timeout-s", "900", "--tier-name", "support-student-1")
        finally:
            stop.set()
            runner.join(150)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads((tmp_path / "turn" / "report.json").read_text())
        assert report["outcome"] == "promoted", report
        assert report["stages"]["dataset"]["counts"]["train"] > 0
        assert "validation" in report["stages"]["distill"]["selection"]["by"]
        trim = report["stages"]["distill"]["vocab_trim"]  # the default: trained on the captured data's vocabulary
        assert trim["when"] == "before training" and trim["vocab_after"] < trim["vocab_before"] // 5
        assert report["stages"]["canary"]["shadow_pairs"] >= 3

        route = ControlStore(make_engine(db)).snapshot().routes["support"]
        assert route.tier == "support-student-1" and route.canary_tier is None
        wait_until(lambda: _ask(gw, _messages(1, offset=11)[0]).headers["x-tierwise-tier"] == "support-student-1",
                   60, "the workload's traffic on the promoted student")
        assert gw.proc.poll() is None  # the same gateway process all along: no restart
    finally:
        gw.stop()
