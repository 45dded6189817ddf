"""Tried as a new user (issue #13 item 5): shadow pairs the gateway recorded -> `python -m
gateway shadow export` -> `python -m router train`. The export marks the reference tier
correct on every row, so the router must pick the right target itself, and say clearly
(exit 2, no traceback) when the data cannot teach it anything."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime

from gateway.ledger.schema import make_engine, shadow_pairs_table
from support.processes import REPO
from support.shared_data import shared_data


def _prompts() -> tuple[list[str], list[str]]:
    with open(shared_data("banking77", "train.csv"), newline="", encoding="utf-8") as f:
        support = [row["text"] for _, row in zip(range(40), csv.DictReader(f))]
    with open(shared_data("routellm", "mmlu", "mmlu_astronomy.csv"), newline="", encoding="utf-8") as f:
        exam = [row["prompt"] for _, row in zip(range(40), csv.DictReader(f))]
    return support, exam


def _ledger_with_pairs(path, pairs: list[tuple[str, float]]) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(shadow_pairs_table.insert(), [
            {"ts": datetime.now(UTC), "request_id": f"r{i}", "tier": "student", "reference_tier": "teacher",
             "agreement": agreement, "metric": "rouge_l", "reference_cost": 0.0,
             "prompt": json.dumps([{"role": "user", "content": prompt}])}
            for i, (prompt, agreement) in enumerate(pairs)])
    engine.dispose()
    return url


def _run(*args: str):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_shadow_export_trains_a_router_with_the_right_target(tmp_path):
    support, exam = _prompts()
    url = _ledger_with_pairs(tmp_path / "ledger.db", [(p, 1.0) for p in support] + [(p, 0.1) for p in exam])
    export = _run("gateway", "shadow", "export", "--out", str(tmp_path / "pairs.csv"), "--ledger-url", url)
    assert export.returncode == 0, export.stderr
    trained = _run("router", "train", "--data", str(tmp_path / "pairs.csv"), "--cheap-column", "student",
                   "--strong-column", "teacher", "--out", str(tmp_path / "router.skops"), "--split", "all")
    assert trained.returncode == 0, trained.stderr
    assert "target: gap" in trained.stderr
    scored = _run("router", "score", "--model", str(tmp_path / "router.skops"), exam[0])
    assert scored.returncode == 0, scored.stderr


def test_one_class_data_stops_with_a_clear_message(tmp_path):
    support, exam = _prompts()
    url = _ledger_with_pairs(tmp_path / "ledger.db", [(p, 1.0) for p in support + exam])
    assert _run("gateway", "shadow", "export", "--out", str(tmp_path / "pairs.csv"), "--ledger-url", url).returncode == 0
    trained = _run("router", "train", "--data", str(tmp_path / "pairs.csv"), "--cheap-column", "student",
                   "--strong-column", "teacher", "--out", str(tmp_path / "router.skops"))
    assert trained.returncode == 2 and "only one class" in trained.stderr and "Traceback" not in trained.stderr
    missing = _run("router", "train", "--data", str(tmp_path / "pairs.csv"), "--cheap-column", "student",
                   "--strong-column", "flagship", "--out", str(tmp_path / "router.skops"))
    assert missing.returncode == 2 and "flagship" in missing.stderr and "Traceback" not in missing.stderr
