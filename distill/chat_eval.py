"""Student vs teacher on a held-out chat test split, and the promotion gate (issue #13 item 4).

The test records' answers are the teacher's (captured) or gold ones. Quality is measured the
way the workload's answers are shaped:

* **structured** (``exact``): when most reference answers are JSON objects, the share of
  answers whose JSON fields equal the reference's; otherwise, when the first lines are short
  labels (``Intent: card_arrival``, ``B``), the share whose first line matches exactly;
* **free text**: ROUGE-L F1 against the reference (``tierwise_common.text_metrics``, the same
  tokenisation the gateway's shadow agreement uses).

The gate: the student passes when its quality is at least ``min_fraction`` of the reference's
(the teacher's own answers score 1.0 against themselves; with gold references the teacher is
evaluated the same way and the fraction is of its score).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tierwise_common.text_metrics import rouge_l_f1

SHORT_FIRST_LINE = 48  # characters: a first line this short is a label, not prose


def first_line(text: str) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads((text or "").strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def answer_kind(references: Sequence[str]) -> str:
    """``json``, ``first_line`` or ``free_text``: how this workload's answers are compared."""
    if not references:
        return "free_text"
    if sum(_json_object(r) is not None for r in references) > len(references) / 2:
        return "json"
    short = sum(0 < len(first_line(r)) <= SHORT_FIRST_LINE for r in references)
    return "first_line" if short > len(references) * 0.8 else "free_text"


def score_answers(answers: Sequence[str], references: Sequence[str], kind: str | None = None) -> dict:
    """Per-answer scores and their mean under the workload's comparison."""
    kind = kind or answer_kind(references)
    if kind == "json":
        scores = [float(_json_object(a) is not None and _json_object(a) == _json_object(r))
                  for a, r in zip(answers, references)]
    elif kind == "first_line":
        scores = [float(first_line(a) == first_line(r)) for a, r in zip(answers, references)]
    else:
        scores = [rouge_l_f1(a, r) for a, r in zip(answers, references)]
    rouge = [rouge_l_f1(a, r) for a, r in zip(answers, references)]
    n = len(scores)
    return {"metric": kind, "n": n, "quality": sum(scores) / n if n else 0.0,
            "rouge_l": sum(rouge) / n if n else 0.0, "scores": scores}


def passes_gate(student_quality: float, teacher_quality: float, min_fraction: float) -> bool:
    """The promotion gate: the student keeps at least ``min_fraction`` of the teacher's quality."""
    if teacher_quality <= 0:
        return False
    return student_quality >= min_fraction * teacher_quality


def gate_report(student: dict, teacher: dict, min_fraction: float) -> dict:
    fraction = student["quality"] / teacher["quality"] if teacher["quality"] > 0 else 0.0
    return {"metric": student["metric"], "n": student["n"], "student_quality": student["quality"],
            "teacher_quality": teacher["quality"], "fraction_of_teacher": fraction, "min_fraction": min_fraction,
            "passes": passes_gate(student["quality"], teacher["quality"], min_fraction)}
