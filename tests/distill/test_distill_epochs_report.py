"""The training-length report (``benchmarks/distill_epochs.py``).

Fed small fake sweep raw files: each recipe's epoch count is chosen on validation among the
counts where it has all its seeds (a count with fewer seeds is shown, never chosen), test chooses
nothing, and the KD margin comes with an interval over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import distill_epochs as de


def _raw(tmp_path: Path, epochs: int, runs: dict[str, tuple[float, float]]) -> Path:
    """A ``distill_sweep_<N>ep_gpu_raw.json``; ``runs``: step key -> (validation, test)."""
    steps: dict = {"eval_teacher": {"validation": {"intent_accuracy": 0.99}, "test": {"intent_accuracy": 0.90}}}
    for key, (val, test) in runs.items():
        steps[key] = {"validation": {"intent_accuracy": val}, "test": {"intent_accuracy": test}, "seconds": 10.0}
    path = tmp_path / f"distill_sweep_{epochs}ep_gpu_raw.json"
    path.write_text(json.dumps({"steps": steps, "hardware": {"gpu": "none"}}))
    return path


def _seeds(name: str, vals: list[float], tests: list[float]) -> dict[str, tuple[float, float]]:
    return {f"{name}_seed{i}": (v, t) for i, (v, t) in enumerate(zip(vals, tests))}


def test_validation_chooses_among_full_seed_sets(tmp_path):
    raw = {
        8: _raw(tmp_path, 8, {**_seeds("hard", [0.80] * 3, [0.80] * 3),
                              **_seeds("kd_alpha0.5", [0.85] * 3, [0.86, 0.86, 0.86])}),
        16: _raw(tmp_path, 16, {**_seeds("hard", [0.82] * 3, [0.79] * 3),  # better on validation, worse on test
                                **_seeds("kd_alpha0.5", [0.84] * 3, [0.90] * 3)}),  # best on test: not chosen
        # one seed only: the best validation figure of all, but not eligible
        32: _raw(tmp_path, 32, {**_seeds("hard", [0.81] * 3, [0.81] * 3), "kd_alpha0.5_seed0": (0.99, 0.99)}),
    }
    doc = de.report(raw)
    assert doc["chosen_epochs"] == {"hard": 16, "kd_alpha0.5": 8}
    assert doc["seeds_missing_so_not_eligible"] == {"kd_alpha0.5": {"32": [1, 2]}}
    assert doc["accuracy_by_epochs"]["kd_alpha0.5"]["32"]["eligible_for_selection"] is False
    assert doc["kd_minus_hard_test_points"] == pytest.approx(7.0)  # 0.86 - 0.79 at the chosen counts
    assert doc["target_met"] is True
    assert doc["kd_minus_hard_test_interval"]["standard_error_points"] == 0.0


def test_margin_interval_reflects_the_seed_spread(tmp_path):
    raw = {8: _raw(tmp_path, 8, {**_seeds("hard", [0.80] * 3, [0.88, 0.89, 0.90]),
                                 **_seeds("kd_alpha0.5", [0.85] * 3, [0.905, 0.91, 0.915])})}
    doc = de.report(raw)
    iv = doc["kd_minus_hard_test_interval"]
    assert doc["kd_minus_hard_test_points"] == pytest.approx(2.0)
    assert doc["target_met"] is True
    # std 1.0 and 0.5 points over 3 seeds: SE = sqrt((1 + 0.25) / 3) = 0.65 points
    assert iv["standard_error_points"] == pytest.approx(0.65, abs=0.01)
    low, high = iv["ci95_points"]
    assert low < 2.0 < high and high - low > 2 * 1.96 * 0.64  # t with few degrees of freedom: wider than normal
