"""``python -m router train | evaluate | score`` end to end on three real MMLU subjects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router import load_router
from router.cli import app
from support.shared_data import shared_data

SUBJECTS = ("high_school_mathematics", "high_school_us_history", "college_physics")


@pytest.mark.slow
def test_train_evaluate_score(tmp_path: Path) -> None:
    files = [shared_data("routellm", "mmlu", f"mmlu_{s}.csv") for s in SUBJECTS]
    runner = CliRunner()
    model = tmp_path / "r.skops"
    data_args = [arg for f in files for arg in ("--data", str(f))]

    result = runner.invoke(app, ["train", "--out", str(model), *data_args, "--teacher-share", "0.3", "--test-size", "0.3"])
    assert result.exit_code == 0, result.output
    router = load_router(model)
    meta = router.metadata
    assert meta["training_data"]["n_prompts"] == meta["split"]["n_train"]
    assert meta["threshold"]["teacher_share_target"] == 0.3
    assert set(meta["heldout_metrics"]) >= {"router", "random", "subject prior", "oracle"}

    out_json, out_png = tmp_path / "eval.json", tmp_path / "eval.png"
    result = runner.invoke(app, ["evaluate", "--model", str(model), *data_args, "--json", str(out_json), "--png", str(out_png)])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["data"]["n_prompts"] == meta["split"]["n_test"]
    assert report["metrics"]["oracle"]["apgr"] > report["metrics"]["random"]["apgr"]
    assert report["latency"]["p50_ms"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = runner.invoke(app, ["score", "--model", str(model), "Solve for x: 3x + 7 = 22"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= scored["score"] <= 1.0 and scored["tier"] in {"teacher (strong)", "student (cheap)"}
