"""``benchmarks/flywheel_gpu.py fit``: each run's cascade fitted on validation and gated on test,
and the run a flywheel would pick on validation alone (never on test)."""

from __future__ import annotations

import argparse
import json
import random

from benchmarks import flywheel_gpu
from distill.cascade_fit import StudentAnswer

LABELS = [f"Intent: label_{i}" for i in range(6)]


def _records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": f"message {seed}-{i}"},
                          {"role": "assistant", "content": rng.choice(LABELS) + "\nReply: ok"}]} for i in range(n)]


def _answers(records: list[dict], wrong_share: float, seed: int) -> list[dict]:
    """The student's answers: a ``wrong_share`` of them wrong, and unsure when wrong (mostly)."""
    rng = random.Random(seed)
    out = []
    for r in records:
        reference = r["messages"][-1]["content"].splitlines()[0]
        wrong = rng.random() < wrong_share
        text = (LABELS[(LABELS.index(reference) + 1) % len(LABELS)] if wrong else reference) + "\nReply: ok"
        sure = (not wrong) if rng.random() < 0.9 else wrong
        lp = -0.02 if sure else -2.5
        tokens = [{"token": w, "logprob": lp + rng.uniform(-0.01, 0), "top_logprobs": [
            {"token": w, "logprob": lp}, {"token": "x", "logprob": lp - (4.0 if sure else 0.2)}]}
                  for w in ("Intent", ":", " label", "\n")]
        out.append(StudentAnswer(text, tokens).__dict__)
    return out


def test_fit_reports_every_run_and_picks_on_validation(tmp_path, monkeypatch):
    data = tmp_path / "captured"
    data.mkdir()
    splits = {s: _records(200, i) for i, s in enumerate(("train", "validation", "test"))}
    for s, records in splits.items():
        (data / f"{s}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "device.json").write_text(json.dumps({"device": "test"}))
    for name, wrong in (("captured", 0.30), ("captured-12ep", 0.10)):
        (answers / f"{name}.answers.json").write_text(json.dumps({
            "answers": {s: _answers(splits[s], wrong, seed=len(name) + k) for k, s in enumerate(("validation", "test"))},
            "seconds": {"distill": 1.0, "answers": 1.0}, "selection": None}))
    monkeypatch.setattr(flywheel_gpu, "REPO", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    flywheel_gpu.fit(argparse.Namespace(answers_dir=str(answers), captured=str(data), simulated=str(tmp_path / "none"),
                                        teacher_answers=None, quality=0.97, min_share=0.2, margin=0.01))
    doc = json.loads((tmp_path / "benchmarks" / "results" / "flywheel_gpu.json").read_text())
    assert set(doc["datasets"]) == {"captured", "captured-12ep"}
    assert doc["datasets"]["captured-12ep"]["variant"]["max_epochs"] == 12
    for run in doc["datasets"].values():
        cascade = run["cascade"]
        assert cascade["validation"]["quality"] >= 0.98  # threshold met quality + margin on validation
        assert cascade["passes"] == (cascade["test"]["routed_quality"] >= 0.97 and cascade["test"]["share_kept"] >= 0.2)
        assert run["cascade_without_margin"]["threshold"] <= cascade["threshold"]
    # the better student keeps more on validation, so it is the pick, and its test figures are reported
    chosen = doc["chosen_on_validation"]["captured"]
    assert chosen["run"] == "captured-12ep"
    assert chosen["test"] == doc["datasets"]["captured-12ep"]["cascade"]["test"]
    assert "timing_note" in doc
